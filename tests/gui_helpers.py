"""Shared helpers for the control-window tests: a Qt application, waiting, and an engine on loopback.

The engine is the real service (`EngineService` + FastAPI app + uvicorn) on a free loopback port,
over the pipeline it is given: the session's real one (`tests.conftest.shared_engine`), or
`StandInPipeline` (a sine generator with real progress and cancel) where the model does not matter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gui.engine_process import free_port

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


class InProcessEngine:
    """The engine HTTP service in a background thread; `stop()` and `start()` again on the same port."""

    def __init__(self, results_dir: Path, pipeline, port: int | None = None):
        self.results_dir = results_dir
        self.pipeline = pipeline
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = None
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> InProcessEngine:
        import uvicorn

        from engine.service.app import create_app
        from engine.service.core import EngineService

        self.service = EngineService(self.pipeline, results_dir=self.results_dir, log=lambda line: None)
        app = create_app(self.service, token=None)
        self.service.start()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise RuntimeError("the in-process engine did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None
        if self.service is not None:
            self.service.stop()
            self.service = None


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
