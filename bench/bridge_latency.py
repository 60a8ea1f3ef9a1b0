"""Bridge latency: OSC trigger -> clip inserted in the DAW, minus the engine's compute time.

Runs the whole path on this machine: an OSC client sends /acecomp/repaint to the bridge, a
simulated REAPER (the mailbox side of ace_companion.lua) renders the context and receives the
insert, and an engine serves the job. By default the engine is in-process with a stand-in
pipeline (so the figures are the bridge's own overhead: render hand-off, upload, HTTP,
download, resampling, cutting, WAV writing, insert hand-off); pass --engine-url to use a
running engine instead.

    PYTHONPATH=. python bench/bridge_latency.py            # 1 trigger, then 10 in a row
    PYTHONPATH=. python bench/bridge_latency.py --engine-url http://127.0.0.1:8001

Prints per run: total (trigger -> inserted), engine compute (job started -> finished), queue
wait (job created -> started) and bridge overhead = total - compute - queue wait.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.app import BridgeApp  # noqa: E402
from bridge.config import BridgeConfig  # noqa: E402
from engine.client import EngineClient  # noqa: E402
from tests.bridge_support import OscPeer, SimulatedReaper, echo_engine, wait_until  # noqa: E402

BAR_S = 3 * 60 / 96
REGION = (2 * BAR_S, 10 * BAR_S)  # 8 bars of 3/4 at 96 BPM


def run_batch(app, reaper, client, engine: EngineClient, triggers: int) -> list[dict]:
    first_insert = len(reaper.inserted)
    first_job = len(client.all("/acecomp/job"))
    first_result = len(client.all("/acecomp/result"))
    first_done = len(client.all("/acecomp/done"))
    sent = []
    for _ in range(triggers):
        sent.append(time.perf_counter())
        client.send(app.commands.port, "/acecomp/repaint")
    inserted_at: dict[str, float] = {}

    def all_in():
        for entry in reaper.inserted[first_insert:]:
            inserted_at.setdefault(entry["path"], time.perf_counter())
        return len(client.all("/acecomp/done")) - first_done >= triggers
    wait_until(all_in, timeout=600)
    failed = [args for args in client.all("/acecomp/done")[first_done:] if args[1] != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} action(s) failed: {client.all('/acecomp/error')[-3:]}")
    # jobs in submission order ~ triggers in send order (they are sent within milliseconds)
    job_order = [args[1] for args in client.all("/acecomp/job")[first_job:]]
    by_job = {args[0]: args[1] for args in client.all("/acecomp/result")[first_result:]}
    rows = []
    for n, job_id in enumerate(job_order):
        job = engine.job(job_id)
        compute = float(job["finished_at"]) - float(job["started_at"])
        queue = float(job["started_at"]) - float(job["created_at"])
        total = inserted_at[by_job[job_id]] - sent[n]
        rows.append({"total": total, "compute": compute, "queue": queue, "overhead": total - compute - queue})
    return rows


def report(label: str, rows: list[dict]) -> None:
    print(f"\n{label}: {len(rows)} trigger(s)")
    for key in ("total", "compute", "queue", "overhead"):
        values = [r[key] * 1000 for r in rows]
        print(f"  {key:<9} median {statistics.median(values):8.1f} ms   max {max(values):8.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-url", default=None, help="use this engine instead of the in-process stand-in")
    parser.add_argument("--burst", type=int, default=10, help="triggers in a row for the second run (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        engine_cm = contextlib.nullcontext(None) if args.engine_url else echo_engine(tmp_path)
        with engine_cm as server:
            url = args.engine_url or server.url
            config = BridgeConfig(engine_url=url, host="reaper", osc_port=0, reaper_listen_port=0,
                                  reaper_mailbox=str(tmp_path / "mailbox"), output_dir=str(tmp_path / "clips"),
                                  request_defaults={"caption": "bench", "inference_steps": 2})
            app = BridgeApp(config)
            app.start()
            reaper = SimulatedReaper(config.reaper_mailbox, app.adapters["reaper"].listen_port, 44100)
            client = OscPeer()
            engine = EngineClient(url)
            try:
                reaper.set_tempo(96, 3, 4)
                reaper.select(*REGION)
                wait_until(lambda: app.host_state.region() is not None and app.host_state.get("meter") == (3, 4))
                print(f"engine: {url}  region: 8 bars of 3/4 at 96 BPM ({REGION[1] - REGION[0]:.2f} s), 44.1 kHz host")
                report("single", run_batch(app, reaper, client, engine, 1))
                report("burst", run_batch(app, reaper, client, engine, args.burst))
            finally:
                engine.close()
                client.close()
                reaper.close()
                app.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
