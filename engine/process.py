"""Start, watch, restart and stop an engine subprocess (`python -m engine.service ...`).

Torch-free: the launcher, the window, the screenshot command and tests use it. The engine
itself runs in the child process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EngineProcess:
    """An engine we started; `stop()` ends it (terminate, then kill after a grace period)."""

    def __init__(self, checkpoints: str | os.PathLike | None = None, host: str = "127.0.0.1",
                 port: int | None = None, token: str | None = None, results: str | os.PathLike | None = None,
                 extra_args: list[str] | None = None, log_path: str | os.PathLike | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.token = token
        self.checkpoints = checkpoints
        self.results = results
        self.extra_args = list(extra_args or [])
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"ace-engine-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0  # how many times start() ran (restarts included)
        self._log: IO | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "engine.service", "--host", self.host, "--port", str(self.port)]
        if self.checkpoints:
            command += ["--checkpoints", os.fspath(self.checkpoints)]
        if self.token:
            command += ["--token", self.token]
        if self.results:
            command += ["--results", os.fspath(self.results)]
        return command + self.extra_args

    def start(self, append_log: bool = False) -> EngineProcess:
        """Start the engine; `append_log` keeps the earlier log (restarts), else it starts empty."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab" if append_log else "wb")
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        self.starts += 1
        return self

    def restart(self, grace_s: float = 5.0) -> EngineProcess:
        """Stop the engine if it still runs and start it again on the same port (reloads every model)."""
        self.stop(grace_s)
        return self.start(append_log=True)

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait_ready(self, client, timeout_s: float = 120.0) -> None:
        """Poll `client.health()` until it answers; raise RuntimeError with the log tail if the engine dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the engine exited with code {self.process.returncode} while starting:\n"
                                   f"{self.log_tail()}")
            try:
                client.health()
                return
            except Exception:  # not up yet: EngineUnavailable, or an HTTP error while it loads
                time.sleep(0.25)
        raise RuntimeError(f"the engine did not answer within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RestartPolicy:
    """When to restart an engine that died: growing delays, and giving up after a run of quick deaths.

    An engine that stayed up for `stable_s` seconds counts as healthy again, so a crash days
    later restarts after the shortest delay.
    """

    def __init__(self, delays_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0), max_attempts: int = 5,
                 stable_s: float = 60.0):
        self.delays_s = delays_s
        self.max_attempts = max_attempts
        self.stable_s = stable_s
        self.attempts = 0
        self._started_at: float | None = None

    def started(self, now: float) -> None:
        self._started_at = now

    def next_delay(self, now: float) -> float | None:
        """Seconds to wait before the next restart, or None to give up. Call when the engine died."""
        if self._started_at is not None and now - self._started_at >= self.stable_s:
            self.attempts = 0
        if self.attempts >= self.max_attempts:
            return None
        delay = self.delays_s[min(self.attempts, len(self.delays_s) - 1)]
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
