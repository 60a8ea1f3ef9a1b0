"""Engine pipelines without a model, and an engine over HTTP on one.

Both follow the pipeline contract the engine service relies on (`info`, `load_dit`, `load_lm`,
`generate` with progress and cancel):
- `EchoPipeline` answers with recognisable audio derived from the request's source, so a test can
  check where the bridge put the result;
- `StandInPipeline` runs N timed "sampler steps" (optionally held at a gate) and returns constant
  audio, for queue, cancel and load tests.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.service.threaded import InProcessEngine
from engine.types import Cancelled, GenerationOutput, ProgressEvent
from engine.units import SAMPLE_RATE

MARK_HZ = 1000.0  # the "new" audio the echo pipeline writes into repaint regions


def mark(frames: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(frames) / sample_rate
    tone = 0.25 * np.sin(2 * np.pi * MARK_HZ * t).astype(np.float32)
    return np.stack([tone, tone])


class EchoPipeline:
    """Pipeline contract without a model. repaint: the source with the repaint span replaced by
    a 1 kHz tone (outpainting past the end like the engine); extract: half the source;
    cover: the source negated; text2music: the tone for `duration`."""

    def __init__(self, steps: int = 3, step_s: float = 0.0):
        self.steps = steps
        self.step_s = step_s
        self.requests = []

    def info(self) -> dict:
        return {"dit": "echo", "lm": None, "device": "cpu", "dtype": "float32", "checkpoints": ""}

    def load_dit(self, name):
        pass

    def load_lm(self, name):
        pass

    def generate(self, request, progress=None, cancel=None, dump=False):
        self.requests.append(request)
        for step in range(self.steps):
            if cancel and cancel():
                raise Cancelled("cancelled")
            if progress:
                progress(ProgressEvent("diffusion", step + 1, self.steps, ""))
            time.sleep(self.step_s)
        if request.task_type == "text2music":
            audio = mark(int(round(request.duration * SAMPLE_RATE)))
        else:
            data, sr = sf.read(request.src_audio, dtype="float32", always_2d=True)
            assert sr == SAMPLE_RATE, "the bridge sends context audio at 48 kHz"
            src = data.T.copy()
            if request.task_type == "repaint":
                a = int(round(request.repainting_start * SAMPLE_RATE))
                b = int(round(request.repainting_end * SAMPLE_RATE))
                if b > src.shape[1]:
                    src = np.concatenate([src, np.zeros((2, b - src.shape[1]), np.float32)], axis=1)
                src[:, a:b] = mark(b - a)
                audio = src
            elif request.task_type == "extract":
                audio = 0.5 * src
            else:
                audio = -src
        seeds = request.item_seeds() or [1234]
        return GenerationOutput(audio=[audio.astype(np.float32)], sample_rate=SAMPLE_RATE, seeds=seeds,
                                request=request.to_dict(), timings={"total": 0.0})


@contextlib.contextmanager
def echo_engine(tmp_path, pipeline=None):
    """An in-process engine over an `EchoPipeline` (or the pipeline given), results under `tmp_path`."""
    pipeline = pipeline if pipeline is not None else EchoPipeline()
    with InProcessEngine(Path(tmp_path) / "engine-results", pipeline) as engine:
        yield engine


class StandInPipeline:
    """Implements the Pipeline contract without a model: N 'sampler steps' of `step_s` each.

    `gate` (a threading.Event), when given, holds every job at its first step until set, so
    tests can line up a queue behind a running job. `fail_with` makes generate raise.
    """

    def __init__(self, steps: int = 4, step_s: float = 0.0, gate: threading.Event | None = None):
        self.steps = steps
        self.step_s = step_s
        self.gate = gate
        self.fail_with: BaseException | None = None
        self.order: list[str] = []
        self.dit = "acestep-v15-turbo"
        self.lm = None

    def info(self) -> dict:
        return {"dit": self.dit, "lm": self.lm, "device": "cpu", "dtype": "float32", "checkpoints": ""}

    def load_dit(self, name: str) -> None:
        self.dit = name

    def load_lm(self, name):
        self.lm = name

    def generate(self, request, progress=None, cancel=None, dump=False):
        self.order.append(request.caption)
        if self.fail_with is not None:
            raise self.fail_with
        for step in range(self.steps):
            if self.gate is not None:
                while not self.gate.wait(0.01):
                    if cancel and cancel():
                        raise Cancelled("cancelled")
            if cancel and cancel():
                raise Cancelled("cancelled")
            if progress:
                progress(ProgressEvent("diffusion", step + 1, self.steps, ""))
            time.sleep(self.step_s)
        seeds = request.item_seeds() or [int(s) for s in np.random.randint(0, 2 ** 31, request.batch_size)]
        sr = SAMPLE_RATE
        n = int(sr * (request.duration or 1.0))
        audio = [np.zeros((2, n), np.float32) + 0.1 * (i + 1) for i in range(request.batch_size)]
        return GenerationOutput(audio=audio, sample_rate=sr, seeds=seeds, request=request.to_dict(),
                                timings={"total": 0.0}, models={"dit": self.dit, "lm": self.lm})
