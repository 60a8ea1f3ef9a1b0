"""Wait for a file to arrive in a folder without a polling loop (Linux inotify through ctypes).

The REAPER script answers by renaming a reply file into the mailbox; `FolderEvents.wait`
returns as soon as something is written or renamed there. Where inotify is not available
(macOS, Windows) it falls back to a short sleep, so callers still see replies within a few ms.
"""

from __future__ import annotations

import ctypes
import os
import select
import sys
import time

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
FALLBACK_S = 0.005


class FolderEvents:
    def __init__(self, folder: str):
        self.fd: int | None = None
        if not sys.platform.startswith("linux"):
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd < 0:
            return
        if libc.inotify_add_watch(fd, os.fsencode(folder), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            os.close(fd)
            return
        self.fd = fd

    def wait(self, timeout_s: float) -> None:
        """Return when a file was written or renamed into the folder, or after `timeout_s`."""
        if self.fd is None:
            time.sleep(max(0.0, min(timeout_s, FALLBACK_S)))
            return
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
        if ready:
            try:
                os.read(self.fd, 64 * 1024)  # drain the events; the caller checks for its file
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FolderEvents:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
