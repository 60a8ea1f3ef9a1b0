"""The engine's HTTP service inside the calling process, for tests, benchmarks and tools.

`InProcessEngine` runs what `ace-companion engine` runs (an `EngineService` around a pipeline,
the FastAPI app in front of it, uvicorn) on a loopback port from a background thread, so a
client can talk HTTP to a real engine without a second process and its cold start.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

STARTUP_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 10.0


def _quiet(line: str) -> None:
    pass


class InProcessEngine:
    """An engine served on 127.0.0.1 from a thread; use it as a context manager or `start()`/`stop()`.

    The port is reserved when the object is made (`url` is known before `start()`), and it stays
    the same across `stop()` and `start()` again: each start serves a fresh `EngineService` on
    the same results folder, which is what a client sees when the engine process restarts.
    `token` and `log` go to the app and the service as in `ace-companion engine`; the service's
    log is silent unless `log` is given.
    """

    def __init__(self, results_dir: str | os.PathLike, pipeline: Any, port: int | None = None, *,
                 token: str | None = None, log: Callable[[str], None] | None = None):
        self.results_dir = results_dir
        self.pipeline = pipeline
        self.token = token
        self.log = log or _quiet
        self._socket = self._bind(port or 0)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = None
        self.app = None
        self._server = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _bind(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> InProcessEngine:
        import uvicorn

        from engine.service.app import create_app
        from engine.service.core import EngineService

        if self._server is not None:
            raise RuntimeError(f"the in-process engine at {self.url} is already running")
        if self._socket is None:
            self._socket = self._bind(self.port)
        self.service = EngineService(self.pipeline, self.results_dir, log=self.log)
        self.app = create_app(self.service, token=self.token)
        self.service.start()
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=int(SHUTDOWN_TIMEOUT_S // 2))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=f"engine-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the in-process engine did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving, then stop the service (its running job goes back to the queue)."""
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(SHUTDOWN_TIMEOUT_S)
            self._server = None
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.service is not None:
            self.service.stop()  # kept (stopped) for inspection until the next start

    def __enter__(self) -> InProcessEngine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
