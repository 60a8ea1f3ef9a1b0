"""Helpers for the service tests: a stand-in pipeline for queue-order tests and small utilities."""

from __future__ import annotations

import threading
import time

import numpy as np

from engine.types import Cancelled, GenerationOutput, ProgressEvent


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
        sr = 48000
        n = int(sr * (request.duration or 1.0))
        audio = [np.zeros((2, n), np.float32) + 0.1 * (i + 1) for i in range(request.batch_size)]
        return GenerationOutput(audio=audio, sample_rate=sr, seeds=seeds, request=request.to_dict(),
                                timings={"total": 0.0}, models={"dit": self.dit, "lm": self.lm})


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.01):
    """Poll until predicate() is truthy; returns its value or raises AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


class LiveServer:
    """Runs an ASGI app under uvicorn on 127.0.0.1 with an ephemeral port, in a thread."""

    def __init__(self, app):
        import socket

        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        wait_for(lambda: self.server.started, timeout=20)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def write_tone(path, seconds: float = 1.0, sample_rate: int = 48000) -> str:
    """A short stereo sine WAV, for upload tests."""
    import soundfile

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.2 * np.sin(2 * np.pi * 220.0 * t).astype(np.float32)
    soundfile.write(str(path), np.stack([tone, tone], axis=1), sample_rate)
    return str(path)


# What a proper client (engine.client.EngineClient) sends with every request.
CLIENT_HEADERS = {"X-ACE-Companion": "1"}


def api_client(app, **kwargs):
    """A TestClient that talks to `app` as EngineClient does: addressed to 127.0.0.1, with its header.

    (TestClient's default host "testserver" is not a name of the engine, so the engine refuses it.)"""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1", headers={**CLIENT_HEADERS, **kwargs.pop("headers", {})},
                      **kwargs)
