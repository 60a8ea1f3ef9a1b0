"""What every DAW adapter offers the app: state in, and optionally render and insert."""

from __future__ import annotations

import time
from typing import Any


class AdapterError(RuntimeError):
    """The DAW did not do what was asked (gone, timed out, refused); the message says which."""


class HostAdapter:
    """Base class. Subclasses set `name`, write into `host_state`, and call `seen()` on traffic."""

    name = "host"
    can_render = False
    can_insert = False
    # A host counts as connected when it was heard from within this many seconds.
    connected_within_s = 10.0

    def __init__(self) -> None:
        self.last_seen: float | None = None
        self.errors = 0  # malformed messages received

    def seen(self) -> None:
        self.last_seen = time.time()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def connected(self) -> bool:
        return self.last_seen is not None and time.time() - self.last_seen < self.connected_within_s

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected(), "last_seen": self.last_seen}

    def render(self, start_s: float, end_s: float, dest_path: str, timeout_s: float = 120.0,
               source: str = "master") -> str:
        """Render project time [start_s, end_s) of the master mix (or the selected track) to
        `dest_path`; returns the path."""
        raise AdapterError(f"{self.name} cannot render audio")

    def render_if_changed(self, start_s: float, end_s: float, dest_path: str, since: str | None,
                          timeout_s: float = 120.0, source: str = "master",
                          sample_rate: int | None = None) -> tuple[str | None, str | None]:
        """Like `render`, but may answer (None, version) when the project has not changed since the
        render that returned `version == since`. Hosts that cannot tell always render (version None).
        `sample_rate`: render at this rate if the host can (else at the project rate)."""
        return self.render(start_s, end_s, dest_path, timeout_s=timeout_s, source=source), None

    def insert(self, path: str, position_s: float, *, track: int | None = None, new_track: bool = False,
               track_name: str = "", replace: bool = False, length_s: float | None = None,
               group: str = "", timeout_s: float = 30.0) -> None:
        """Place `path` at `position_s` on `track` (None = selected) or on a new track. New tracks
        with the same `group` (one action's stems) follow each other in insertion order."""
        raise AdapterError(f"{self.name} cannot insert clips")
