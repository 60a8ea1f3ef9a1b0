"""Jam: real-time factor per chunk and the lookahead margin, against a playhead that really moves.

Runs the whole jam path on this machine: a simulated REAPER whose transport plays in real time
(the bridge extrapolates the playhead from its last report), the bridge's jam loop, and an
in-process engine. Per chunk it prints:

  rtf        wall time from the chunk's start of work to its clip written, over the chunk's length
  rtf_engine the engine's compute time alone (job started -> finished), over the chunk's length
  margin     seconds between the chunk's insertion and the playhead reaching its start (> 0: in time)

    PYTHONPATH=. python bench/jam.py                                 # tiny parity weights, CPU
    PYTHONPATH=. python bench/jam.py --full-size --device cuda       # published 2B shapes, random weights

Our goal: rtf <= 0.05 on one H100 (full size). Tiny weights measure the loop's overhead only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.app import BridgeApp  # noqa: E402
from bridge.config import BridgeConfig  # noqa: E402
from bridge.jam import jam_controller  # noqa: E402
from engine.service.threaded import InProcessEngine  # noqa: E402
from simulators import wait_for  # noqa: E402
from simulators.reaper import SimulatedReaper  # noqa: E402

PARITY_CHECKPOINTS = ROOT / "tests" / "data" / "parity" / "checkpoints"


def make_pipeline(full_size: bool, device: str | None):
    from engine.devices import resolve_device_dtype
    from engine.pipeline import Pipeline
    if not full_size:
        return Pipeline.from_checkpoints(PARITY_CHECKPOINTS, dit="acestep-v15-turbo", device=device)
    from bench.engine_stages import load_full_size
    from engine.models.text_encoder import TextEncoder
    dev, dtype = resolve_device_dtype(device, None)
    text, vae, dit, _, _ = load_full_size(dev, dtype)
    tokenizer = TextEncoder.from_folder(PARITY_CHECKPOINTS / "Qwen3-Embedding-0.6B", "cpu").tokenizer
    text = TextEncoder(tokenizer, text.model, dev, dtype)
    return Pipeline(PARITY_CHECKPOINTS, dit, "acestep-v15-turbo", text, vae, dev, dtype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="published 2B DiT shapes with random weights")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--chunks", type=int, default=4, help="chunks to time (default 4)")
    parser.add_argument("--bars", type=int, default=2, help="bars per chunk (default 2)")
    parser.add_argument("--bpm", type=float, default=120.0, help="host tempo, 4/4 (default 120)")
    parser.add_argument("--lookahead", type=int, default=2, help="chunks kept ahead of the playhead (default 2)")
    parser.add_argument("--steps", type=int, default=8, help="diffusion steps per chunk (default 8)")
    args = parser.parse_args()

    pipeline = make_pipeline(args.full_size, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        engine = InProcessEngine(Path(tmp) / "engine", pipeline).start()
        config = BridgeConfig(engine_url=engine.url, host="reaper", osc_port=0, reaper_listen_port=0,
                              reaper_mailbox=f"{tmp}/mailbox", output_dir=f"{tmp}/clips",
                              request_defaults={"caption": "funk band, live drums", "inference_steps": args.steps})
        app = BridgeApp(config)
        app.start()
        reaper = SimulatedReaper(config.reaper_mailbox, app.adapters["reaper"].listen_port, 48000)
        try:
            reaper.set_tempo(args.bpm, 4, 4)
            reaper.state["play_state"] = 1
            reaper.write_state()
            reaper.send("/play", 1.0)
            reaper.send("/time", 0.0)  # playing from 0: the bridge moves the playhead on with the clock
            wait_for(lambda: app.host_state.get("playing") and app.host_state.get("position_s") is not None)
            events = []
            session = jam_controller(app).start({"bars": args.bars, "lookahead": args.lookahead}, events.append)
            wait_for(lambda: len([e for e in events if e["type"] == "jam_chunk"]) >= args.chunks
                       or not session.running, timeout=3600)
            jam_controller(app).stop()
            rows = []
            print(f"\njam: {'full-size 2B (random weights)' if args.full_size else 'tiny parity weights'} on "
                  f"{pipeline.device}, {args.bars} bars of 4/4 at {args.bpm:g} BPM, {args.steps} steps, "
                  f"lookahead {args.lookahead}")
            print(f"{'chunk':>5} {'bar':>4} {'length s':>9} {'work s':>7} {'rtf':>6} {'rtf_engine':>10} {'margin s':>9}"
                  f"  state")
            for chunk in session.chunks[:args.chunks]:
                length = chunk.end_s - chunk.start_s
                job = app.client.job(chunk.job_id) if chunk.job_id else {}
                compute = (float(job["finished_at"]) - float(job["started_at"])) if job.get("finished_at") else 0.0
                margin = (chunk.start_s - chunk.playhead_at_insert_s) if chunk.playhead_at_insert_s is not None \
                    else float("nan")
                rows.append((chunk.generate_s / length, compute / length, margin))
                print(f"{chunk.index:>5} {chunk.first_bar + 1:>4} {length:>9.2f} {chunk.generate_s:>7.2f} "
                      f"{rows[-1][0]:>6.3f} {rows[-1][1]:>10.3f} {margin:>9.2f}  {chunk.state}")
            skips = [e for e in events if e["type"] == "jam_skip"]
            if rows:
                print(f"median rtf {statistics.median(r[0] for r in rows):.3f}, median rtf_engine "
                      f"{statistics.median(r[1] for r in rows):.3f}, smallest margin "
                      f"{min(r[2] for r in rows):.2f} s, skips {len(skips)}")
            if session.message not in ("stopped", ""):
                print(f"jam ended: {session.message}")
        finally:
            reaper.close()
            app.stop()
            engine.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
