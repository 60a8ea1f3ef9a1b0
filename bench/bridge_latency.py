"""Bridge latency: OSC trigger -> clip inserted in the DAW, minus the engine's queue and compute.

Runs the whole path on this machine: an OSC client sends /acecomp/repaint to the bridge, a
simulated REAPER (ace_companion.lua's side of the mailbox) renders the context and receives the
insert, and an engine serves the jobs (in-process with a stand-in pipeline, so what is left is
the bridge's own overhead; pass --engine-url to use a running engine instead).

Each of two set-ups gets 1 trigger (repeated, median) and then a burst of 10:
  without hot path: every trigger renders and uploads; the script finds commands by its 0.1 s look;
  hot path:         unchanged audio is reused from the engine; the script is woken over OSC.

    PYTHONPATH=. python bench/bridge_latency.py
    PYTHONPATH=. python bench/bridge_latency.py --engine-url http://127.0.0.1:8001

Per stage (median ms): plan, source (render hand-off, read, resample), context write, upload,
submit, download, cut, clip write, insert hand-off; overhead = trigger -> clip placed - the
simulated DAW's render/insert time - engine queue wait - engine compute. The last line is the
hot path's overhead. 'other' is what no stage accounts for: waiting for a thread or for the
source of an earlier trigger in a burst (renders run one at a time); it can be slightly
negative, because the engine counts its own job-file write in the queue wait while the bridge
counts it in submit.
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
from simulators import wait_for  # noqa: E402
from simulators.osc import OscPeer  # noqa: E402
from simulators.pipelines import echo_engine  # noqa: E402
from simulators.reaper import WAKE_ACTION, SimulatedReaper  # noqa: E402

BAR_S = 3 * 60 / 96
REGION = (2 * BAR_S, 10 * BAR_S)  # 8 bars of 3/4 at 96 BPM
HOST_SR = 44100
STAGES = ("plan", "source", "context_write", "upload", "submit", "download", "cut", "clip_write", "insert")


def run_batch(app, reaper, client, engine: EngineClient, triggers: int) -> list[dict]:
    """Send `triggers` repaints at once; one row of timings (seconds) per job."""
    first_job = len(client.all("/acecomp/job"))
    first_done = len(client.all("/acecomp/done"))
    first_busy = len(reaper.busy_s)
    sent = []
    for _ in range(triggers):
        sent.append(time.time())
        client.send(app.commands.port, "/acecomp/repaint")
    wait_for(lambda: len(client.all("/acecomp/done")) - first_done >= triggers, timeout=600)
    failed = [args for args in client.all("/acecomp/done")[first_done:] if args[1] != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} action(s) failed: {client.all('/acecomp/error')[-3:]}")
    # The simulated DAW's own work (rendering, inserting) is not the bridge's: renders are shared
    # out evenly over the batch (they run one at a time), inserts go to their clip.
    busy = reaper.busy_s[first_busy:]
    render_share = sum(s for command, _, s in busy if command == "render") / triggers
    insert_s = {path: s for command, path, s in busy if command == "insert"}
    rows = []
    # jobs in submission order ~ triggers in send order (they are sent within a millisecond)
    for n, args in enumerate(client.all("/acecomp/job")[first_job:]):
        job_id = args[1]
        record = app.action_for_job(job_id)
        job = engine.job(job_id)
        compute = float(job["finished_at"]) - float(job["started_at"])
        queue = float(job["started_at"]) - float(job["created_at"])
        daw = render_share + insert_s.get(record.clips[0]["path"], 0.0)
        total = record.finished_at - sent[n]
        row = {stage: record.timings.get(f"{stage}_s", 0.0) for stage in STAGES}
        row.update(total=total, compute=compute, queue=queue, daw=daw, overhead=total - compute - queue - daw)
        row["other"] = row["overhead"] + daw - sum(row[stage] for stage in STAGES)
        rows.append(row)
    return rows


def median_ms(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows) * 1000


def report(label: str, rows: list[dict]) -> None:
    stages = " ".join(f"{median_ms(rows, stage):7.1f}" for stage in STAGES + ("other",))
    print(f"{label:<26} {stages} | {median_ms(rows, 'overhead'):8.1f} {median_ms(rows, 'total'):8.1f}"
          f" {median_ms(rows, 'daw'):6.1f} {median_ms(rows, 'queue'):7.1f} {median_ms(rows, 'compute'):7.1f}")


def header() -> None:
    print(f"{'median ms':<26} " + " ".join(f"{name[:7]:>7}" for name in STAGES + ("other",))
          + f" | {'overhead':>8} {'total':>8} {'daw':>6} {'queue':>7} {'compute':>7}")


def measure(url: str, tmp_path: Path, hot: bool, repeats: int, burst: int) -> tuple[list[dict], list[dict]]:
    reaper = SimulatedReaper(str(tmp_path / ("hot" if hot else "cold") / "mailbox"), sample_rate=HOST_SR)
    config = BridgeConfig(engine_url=url, host="reaper", osc_port=0, reaper_listen_port=0,
                          reaper_port=reaper.osc.port, reaper_mailbox=reaper.mailbox,
                          reaper_wake_action=WAKE_ACTION if hot else None, source_cache=hot,
                          output_dir=str(tmp_path / ("hot" if hot else "cold") / "clips"),
                          request_defaults={"caption": "bench", "inference_steps": 2})
    app = BridgeApp(config)
    app.start()
    reaper.bridge_port = app.adapters["reaper"].listen_port
    client = OscPeer()
    engine = EngineClient(url)
    try:
        reaper.set_tempo(96, 3, 4)
        reaper.select(*REGION)
        wait_for(lambda: app.host_state.region() is not None and app.host_state.get("meter") == (3, 4))
        run_batch(app, reaper, client, engine, 1)  # warm-up: first HTTP connections, imports
        single = [row for _ in range(repeats) for row in run_batch(app, reaper, client, engine, 1)]
        return single, run_batch(app, reaper, client, engine, burst)
    finally:
        engine.close()
        client.close()
        reaper.close()
        app.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-url", default=None, help="use this engine instead of the in-process stand-in")
    parser.add_argument("--repeats", type=int, default=5, help="single triggers per set-up (default 5)")
    parser.add_argument("--burst", type=int, default=10, help="triggers at once (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        engine_cm = contextlib.nullcontext(None) if args.engine_url else echo_engine(tmp_path)
        with engine_cm as server:
            url = args.engine_url or server.url
            print(f"engine: {url}  region: 8 bars of 3/4 at 96 BPM ({REGION[1] - REGION[0]:.2f} s), "
                  f"{HOST_SR / 1000:g} kHz host")
            print("overhead = total (trigger -> clip placed) - daw (simulated render/insert) - engine queue"
                  " - engine compute; stages are the bridge's parts of it, 'other' the rest (threads, events)")
            header()
            results = {}
            for hot in (False, True):
                name = "hot path" if hot else "without hot path"
                single, burst = measure(url, tmp_path, hot, args.repeats, args.burst)
                report(f"{name}, 1 trigger", single)
                report(f"{name}, {args.burst} triggers", burst)
                results[hot] = (single, burst)
    single, burst = results[True]
    print(f"bridge overhead: {median_ms(single, 'overhead'):.1f} ms (1 trigger), "
          f"{median_ms(burst, 'overhead'):.1f} ms per job ({args.burst} triggers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
