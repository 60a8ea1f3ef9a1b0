"""A thread-safe list of callbacks; a failing callback is logged and skipped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Listeners:
    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Any], None]] = []

    def add(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Register `callback`; returns a function that removes it again."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
        return remove

    def call(self, payload: Any, extra: Callable[[Any], None] | None = None) -> None:
        """Call every callback (and `extra`) with `payload`, outside the lock."""
        with self._lock:
            callbacks = list(self._callbacks)
        if extra is not None:
            callbacks.append(extra)
        for callback in callbacks:
            try:
                callback(payload)
            except Exception:  # a broken listener must not break the caller
                log.exception("%s listener failed", self.name)
