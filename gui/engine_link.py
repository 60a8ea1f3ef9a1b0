"""`EngineLink`: the window's connection to the engine (health, jobs, models, files), off the UI thread."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from gui.tasks import TaskRunner, describe_error

FINAL_STATES = ("done", "failed", "cancelled")


class EngineLink(QObject):
    """Wraps an `engine.client.EngineClient`; every call runs on the `TaskRunner`.

    Health is checked every `poll_ms`; when the engine goes away `connection_changed(False, why)`
    fires, checks continue, and on its return the unfinished jobs are followed again.
    """

    connection_changed = pyqtSignal(bool, str)  # connected, message
    health_changed = pyqtSignal(dict)
    job_updated = pyqtSignal(dict)              # the job JSON (GET /v1/jobs/{id})
    models_changed = pyqtSignal(dict)           # GET /v1/models
    error = pyqtSignal(str)

    def __init__(self, client: Any, runner: TaskRunner, poll_ms: int = 2000, parent: QObject | None = None):
        super().__init__(parent)
        self.client = client
        self.runner = runner
        self.connected: bool | None = None  # None until the first health check answers
        self.last_health: dict = {}
        self._checking = False
        self._stop = threading.Event()
        self._watched: set[str] = set()
        self._watched_lock = threading.Lock()
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.check_health)

    @property
    def base_url(self) -> str:
        return getattr(self.client, "base_url", "")

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._stop.clear()
        self._timer.start()
        self.check_health()

    def stop(self) -> None:
        self._stop.set()
        self._timer.stop()

    # ---------------------------------------------------------------- health
    def check_health(self) -> None:
        if self._checking or self._stop.is_set():
            return
        self._checking = True
        self.runner.run(self.client.health, self._on_health, self._on_health_error)

    def _on_health(self, health: dict) -> None:
        self._checking = False
        self.last_health = health if isinstance(health, dict) else {}
        self.health_changed.emit(self.last_health)
        if self.connected is not True:
            self.connected = True
            self.connection_changed.emit(True, f"Engine connected at {self.base_url}")
            self.refresh_models()
            self.refresh_jobs()

    def _on_health_error(self, exc: BaseException) -> None:
        self._checking = False
        if self.connected is not False:
            self.connected = False
            self.connection_changed.emit(False, describe_error(exc))

    # ------------------------------------------------------------------ jobs
    def submit(self, request: dict, priority: str = "interactive", autogen: bool = False,
               on_submitted: Callable[[str], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None) -> None:
        """Upload local `src_audio`/`reference_audio` files, queue the job, then follow it."""

        def work() -> str:
            body = dict(request)
            for key in ("src_audio", "reference_audio"):
                path = body.get(key)
                if isinstance(path, str) and path and not path.startswith("file:"):
                    body[key] = "file:" + self.client.upload(path)
            return self.client.submit(body, priority=priority, autogen=autogen)

        def done(job_id: str) -> None:
            self.job_updated.emit({"id": job_id, "state": "queued", "priority": priority,
                                   "request": dict(request), "progress": {}, "results": [],
                                   "autogen": autogen})
            self.watch(job_id)
            if on_submitted is not None:
                on_submitted(job_id)

        self.runner.run(work, done, on_error or self._report)

    def watch(self, job_id: str) -> None:
        """Follow a job's events until it ends (falls back to polling while the engine is away)."""
        with self._watched_lock:
            if job_id in self._watched:
                return
            self._watched.add(job_id)
        self.runner.run_stream(lambda: self._follow(job_id), name=f"job-{job_id[:8]}")

    def _follow(self, job_id: str) -> None:  # runs on a stream thread
        try:
            while not self._stop.is_set():
                try:
                    for job in self.client.events(job_id):
                        if self._stop.is_set():
                            return
                        self._emit_job(job)
                        if job.get("state") in FINAL_STATES:
                            return
                    job = self.client.job(job_id)  # the stream ended early: ask directly
                    self._emit_job(job)
                    if job.get("state") in FINAL_STATES:
                        return
                except Exception as exc:
                    if getattr(exc, "status", None) == 404:
                        self.runner.post(lambda: self.error.emit(f"Job {job_id[:8]} is unknown to the engine."))
                        return
                    self._stop.wait(1.0)  # engine away or stream broken: retry until it is back
        finally:
            with self._watched_lock:
                self._watched.discard(job_id)

    def _emit_job(self, job: dict) -> None:
        job = dict(job)
        job.pop("event", None)
        self.runner.post(lambda: self.job_updated.emit(job))

    def refresh_jobs(self) -> None:
        """Fetch the engine's job list; unfinished jobs are followed live."""

        def done(jobs: list) -> None:
            for job in jobs or []:
                self.job_updated.emit(job)
                if job.get("state") not in FINAL_STATES:
                    self.watch(job["id"])

        self.runner.run(self.client.jobs, done, self._report)

    def cancel(self, job_id: str) -> None:
        self.runner.run(lambda: self.client.cancel(job_id), None, self._report)

    def set_autogen(self, job_id: str, enabled: bool) -> None:
        def done(job) -> None:
            if isinstance(job, dict) and job.get("id"):
                self.job_updated.emit(job)
                if enabled:
                    self.watch(job["id"])

        self.runner.run(lambda: self.client.set_autogen(job_id, enabled), done, self._report)

    # ---------------------------------------------------------------- models
    def refresh_models(self) -> None:
        self.runner.run(self.client.models, self.models_changed.emit, self._report)

    def load_models(self, dit: str | None, lm: str | None,
                    on_done: Callable[[Any], None] | None = None) -> None:
        """POST /v1/models/load; `lm=None` unloads the planner."""

        def done(result: Any) -> None:
            self.refresh_models()
            self.check_health()
            if on_done is not None:
                on_done(result)

        self.runner.run(lambda: self.client.load_models(dit=dit, lm=lm), done, self._report)

    # ----------------------------------------------------------------- files
    def download(self, file_ref: str, dest: str | os.PathLike,
                 on_done: Callable[[str], None], on_error: Callable[[BaseException], None] | None = None,
                 after: Callable[[str], Any] | None = None) -> None:
        """Save a result file to `dest`; `after(path)` runs on the worker too (e.g. waveform peaks)."""

        def work():
            os.makedirs(os.path.dirname(os.fspath(dest)) or ".", exist_ok=True)
            path = self.client.download(file_ref, dest)
            return (path, after(path)) if after is not None else path

        self.runner.run(work, on_done, on_error or self._report)

    def _report(self, exc: BaseException) -> None:
        self.error.emit(describe_error(exc))


def wait_until(condition: Callable[[], bool], timeout_s: float, process_events: Callable[[], None]) -> bool:
    """Spin the Qt event loop until `condition()` holds (tests and the screenshot command)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process_events()
        if condition():
            return True
        time.sleep(0.01)
    process_events()
    return condition()
