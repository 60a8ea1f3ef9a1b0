"""Shared helpers for the control-window tests: a Qt application, waiting, and pipelines for an engine.

The engine on loopback is `engine.service.threaded.InProcessEngine` (the real service, FastAPI
app and uvicorn in a thread) over the session's pipeline (`engine` in tests/conftest.py) or, where
the model does not matter, `StandInPipeline` (a sine generator with real progress and cancel).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PARITY_CHECKPOINTS = Path(__file__).parent / "data" / "parity" / "checkpoints"


_APP = None


def qt_app():
    """The one QApplication of the test process (kept referenced so it is never collected)."""
    global _APP
    from gui.app import make_application  # the same setup (name, dark theme) as the real entry points
    if _APP is None:
        _APP = make_application(["ace-companion-tests"])
    return _APP


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Run the Qt event loop until `condition()` is true or the time is up."""
    from gui.engine_link import wait_until
    return wait_until(condition, timeout_s, qt_app().processEvents)


class StandInPipeline:
    """Follows the Pipeline contract with a tone instead of a model."""

    def __init__(self, step_s: float = 0.02):
        self.step_s = step_s
        self.dit = "acestep-v15-turbo"

    def info(self) -> dict:
        return {"dit": self.dit, "lm": None, "device": "cpu", "dtype": "float32",
                "checkpoints": str(PARITY_CHECKPOINTS)}

    def load_dit(self, name: str) -> None:
        self.dit = name

    def load_lm(self, name) -> None:
        pass

    def generate(self, request, progress=None, cancel=None, dump=False):
        from engine.types import Cancelled, CheckpointError, GenerationOutput, ProgressEvent
        if request.dit and not (PARITY_CHECKPOINTS / request.dit).is_dir():
            raise CheckpointError(f"DiT folder {request.dit} not found under {PARITY_CHECKPOINTS}")
        steps = request.inference_steps or 8
        for step in range(1, steps + 1):
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            time.sleep(self.step_s)
            if progress is not None:
                progress(ProgressEvent("diffusion", step, steps))
        rate = 48000
        seconds = request.duration if request.has_duration() else 2.0
        if request.src_audio:  # source tasks keep the source's length (repaint may outpaint past it)
            import soundfile as sf
            info = sf.info(request.src_audio)
            seconds = max(info.frames / info.samplerate, request.repainting_end)
        length = int(rate * seconds)
        seeds = request.item_seeds() or [int(np.random.randint(0, 2 ** 31)) for _ in range(request.batch_size)]
        tone = 0.3 * np.sin(np.arange(length) * 2 * np.pi * 220 / rate).astype(np.float32)
        audio = [np.stack([tone, tone]) for _ in seeds]
        return GenerationOutput(audio=audio, sample_rate=rate, seeds=seeds, request=request.to_dict())


def make_fake_daw():
    """A connected DAW adapter for `BridgeApp`: renders noise, records inserts (no real host)."""
    from bridge.adapters import HostAdapter

    class FakeDaw(HostAdapter):
        name = "reaper"
        can_render = True
        can_insert = True
        connected_within_s = 3600.0

        def __init__(self):
            super().__init__()
            self.inserts: list[dict] = []
            self.seen()

        def render(self, start_s: float, end_s: float, dest_path: str, timeout_s: float = 120.0) -> str:
            import soundfile as sf
            rate = 44100
            frames = int(round((end_s - start_s) * rate))
            noise = np.random.default_rng(0).uniform(-0.3, 0.3, size=(frames, 2)).astype(np.float32)
            sf.write(dest_path, noise, rate)
            return dest_path

        def insert(self, path: str, position_s: float, **options) -> None:
            self.inserts.append({"path": path, "position_s": position_s, **options})

    return FakeDaw()
