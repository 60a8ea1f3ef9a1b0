"""`TaskRunner`: the one place the window starts threads; results come back on the UI thread.

Short calls (submit, cancel, download, health) run on a `QThreadPool`. Long streams (a job's
Server-Sent Events) run on daemon threads so a stalled connection can never hold up exit.
Either way `on_done(result)` / `on_error(exc)` run on the UI thread through a queued signal.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from PyQt6.QtCore import QObject, QRunnable, QThreadPool, pyqtSignal, pyqtSlot

log = logging.getLogger(__name__)


class _Call(QRunnable):
    def __init__(self, body: Callable[[], None]):
        super().__init__()
        self._body = body
        self.setAutoDelete(True)

    def run(self) -> None:  # runs on a pool thread
        self._body()


class TaskRunner(QObject):
    """Runs callables off the UI thread and delivers their outcome back onto it."""

    # A closure to execute on the UI thread. Emitted from worker threads; the connection is
    # queued because this object lives on the UI thread.
    _deliver = pyqtSignal(object)
    # Failures with no `on_error` of their own end up here, as a sentence for the musician.
    failed = pyqtSignal(str)

    def __init__(self, parent: QObject | None = None, max_threads: int = 6):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._closed = threading.Event()
        self._deliver.connect(self._run_on_ui_thread)

    # ------------------------------------------------------------------ public
    def run(self, fn: Callable[[], Any], on_done: Callable[[Any], None] | None = None,
            on_error: Callable[[BaseException], None] | None = None) -> None:
        """Call `fn()` on a pool thread; then `on_done(result)` or `on_error(exc)` on the UI thread."""
        self._pool.start(_Call(lambda: self._call(fn, on_done, on_error)))

    def run_stream(self, fn: Callable[[], Any], name: str = "stream",
                   on_done: Callable[[Any], None] | None = None,
                   on_error: Callable[[BaseException], None] | None = None) -> threading.Thread:
        """Like `run`, on a daemon thread of its own (for calls that may block for minutes)."""
        thread = threading.Thread(target=self._call, args=(fn, on_done, on_error), name=name, daemon=True)
        thread.start()
        return thread

    def post(self, closure: Callable[[], None]) -> None:
        """Run `closure()` on the UI thread soon. Safe to call from any thread."""
        if self._closed.is_set():
            return
        try:
            self._deliver.emit(closure)
        except RuntimeError:  # the QObject is gone (application shutting down)
            pass

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self, wait_ms: int = 2000) -> None:
        """Stop delivering results and wait a little for short calls to finish."""
        self._closed.set()
        self._pool.clear()
        self._pool.waitForDone(wait_ms)

    def wait_idle(self, wait_ms: int = 5000) -> bool:
        """Wait for the pool's short calls (tests and shutdown)."""
        return self._pool.waitForDone(wait_ms)

    # ----------------------------------------------------------------- private
    def _call(self, fn, on_done, on_error) -> None:
        try:
            result = fn()
        except Exception as exc:  # delivered to the UI thread; the worker thread never dies on it
            error = exc  # `exc` is unbound when the except block ends; the closure needs its own name
            if on_error is not None:
                self.post(lambda: on_error(error))
            else:
                self.post(lambda: self.failed.emit(describe_error(error)))
            return
        if on_done is not None:
            self.post(lambda: on_done(result))

    @pyqtSlot(object)
    def _run_on_ui_thread(self, closure: Callable[[], None]) -> None:
        if self._closed.is_set():
            return
        try:
            closure()
        except Exception as exc:  # a bug in a UI callback: report it instead of killing the event loop
            log.exception("error in UI callback")
            self.failed.emit(describe_error(exc))


def describe_error(exc: BaseException) -> str:
    """One plain sentence for an exception from the engine client or a file operation.

    No exception class names or errno numbers reach the musician: "ConnectError: [Errno 111]
    Connection refused" becomes "The engine at ... is not answering ...".
    """
    kind = type(exc).__name__
    text = str(exc).strip() or kind
    if kind == "EngineUnavailable" or isinstance(exc, ConnectionError):
        match = re.search(r"engine at (\S+)", text)
        where = f" at {match.group(1)}" if match else ""
        if "timed out" in text.lower() or "timeout" in text.lower():
            return f"The engine{where} did not answer in time; it may be busy loading models."
        return f"The engine{where} is not answering: it is not running, still starting, or the address is wrong."
    if kind == "EngineHTTPError":
        status = getattr(exc, "status", None)
        message = _plain(getattr(exc, "message", None) or text)
        if status == 401:
            return "The engine wants a token: set it in File > Settings (the engine's --token)."
        return f"The engine refused the request: {message}" if status else f"Engine error: {message}"
    if isinstance(exc, OSError):
        reason = exc.strerror or _plain(text)
        name = exc.filename
        return f"{name}: {reason}" if name else f"File problem: {reason}"
    return _plain(text)


def _plain(text: str) -> str:
    """First line, without a leading `SomeError:` class name or an `[Errno N]` code."""
    line = text.strip().splitlines()[0] if text.strip() else text
    line = re.sub(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Unavailable)):\s*", "", line)
    line = re.sub(r"\[Errno -?\d+\]\s*", "", line)
    return line.strip() or "something went wrong"
