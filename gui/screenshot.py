"""`ace-companion screenshot OUT.png`: render the control window offscreen and save it as a PNG.

With --checkpoints it starts a temporary engine on those checkpoints (and stops it after);
--demo fills in a prompt and a simulated host session and waits for one finished job, so the
picture shows the window at work. User settings are never read or written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

DEMO_HOST = {  # shaped like bridge.host_state.HostState.snapshot()
    "tempo": {"value": 96.0, "source": "demo", "updated_at": 0.0},
    "meter": {"value": [3, 4], "source": "demo", "updated_at": 0.0},
    "key": {"value": "A minor", "source": "demo", "updated_at": 0.0},
    "region_s": {"value": [15.0, 22.5], "source": "demo", "updated_at": 0.0},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.png", help="where to write the PNG")
    parser.add_argument("--engine-url", metavar="URL", default=None,
                        help="engine to connect to (default: start one with --checkpoints, "
                             "else http://127.0.0.1:8001)")
    parser.add_argument("--token", default=None, help="bearer token of the engine")
    parser.add_argument("--checkpoints", metavar="DIR", default=None,
                        help="start a temporary engine on these checkpoints (e.g. tests/data/parity/checkpoints)")
    parser.add_argument("--size", default="1280x800", help="window size WIDTHxHEIGHT (default 1280x800)")
    parser.add_argument("--demo", action="store_true",
                        help="simulate a DAW session and render one short clip before the picture")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the engine (default 180)")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"ace-companion screenshot: --size '{text}' is not WIDTHxHEIGHT, e.g. 1280x800") from None
    if not (320 <= width <= 8000 and 240 <= height <= 8000):
        raise SystemExit(f"ace-companion screenshot: --size {width}x{height} is outside 320x240..8000x8000")
    return width, height


def run(args: argparse.Namespace) -> int:
    width, height = _size(args.size)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        print(f"ace-companion screenshot: {out} should end in .png", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from engine.process import EngineProcess
    from gui.app import make_application, make_client
    from gui.engine_link import wait_until
    from gui.settings import Settings

    app = make_application()
    scratch = Path(tempfile.mkdtemp(prefix="ace-screenshot-"))
    engine = None
    settings = Settings(engine_url=args.engine_url or "http://127.0.0.1:8001", engine_token=args.token or "",
                        output_dir=str(scratch / "output"))
    try:
        if args.checkpoints and not args.engine_url:
            engine = EngineProcess(checkpoints=args.checkpoints, results=scratch / "results",
                                   token=args.token).start()
            settings.engine_url = engine.url
            print(f"screenshot: starting an engine on {args.checkpoints} ({engine.url})", file=sys.stderr)
            engine.wait_ready(make_client(settings), timeout_s=args.timeout)

        from gui.main_window import MainWindow
        window = MainWindow(settings, make_client(settings), settings_path=scratch / "gui.json", poll_ms=500)
        window.resize(width, height)
        window.show()
        connected = wait_until(lambda: window.link.connected is not None, args.timeout, app.processEvents)
        if not connected:
            print("screenshot: no answer from the engine; the picture shows the window disconnected", file=sys.stderr)
        if args.demo and window.link.connected:
            _run_demo(window, app, args.timeout)
        wait_until(lambda: False, 0.3, app.processEvents)  # let the last repaints land
        image = window.grab()
        out.parent.mkdir(parents=True, exist_ok=True)
        if not image.save(str(out), "PNG"):
            print(f"ace-companion screenshot: could not write {out}", file=sys.stderr)
            return 1
        window.close()
        print(f"screenshot: wrote {out} ({image.width()}x{image.height()})")
        return 0
    finally:
        if engine is not None:
            engine.stop()


def _run_demo(window, app, timeout_s: float) -> None:
    from gui.engine_link import wait_until
    window.host_panel.apply_snapshot(DEMO_HOST)
    window.host_panel.set_adapters_status({"reaper": {"connected": True, "last_seen": time.time()}})
    prompt = window.prompt_panel
    prompt.caption.setPlainText("dusty boom-bap drums, warm Rhodes chords, vinyl crackle, late-night mood")
    prompt.lyrics.setPlainText("[Intro]\n[Verse]\n[Instrumental]")
    prompt.batch.setValue(2)
    window.run_action("generate")
    finished = wait_until(lambda: len(window.results_model.items()) >= 2, timeout_s, app.processEvents)
    if not finished:
        print("screenshot: the demo job did not finish in time", file=sys.stderr)
        return
    window.results_panel.list.setCurrentIndex(window.results_model.index(1))
    window.results_panel.mark("B")
    window.results_panel.list.setCurrentIndex(window.results_model.index(0))
    window.results_panel.mark("A")
