"""What the bridge knows about the DAW session, field by field, with who said it and when.

Adapters (REAPER, Ableton, MIDI, manual OSC) write fields; the app and the GUI read them.
Every field remembers the adapter that set it (`source`) and the time (`updated_at`,
`time.time()`). A *fallback* source (MIDI clock) only writes a field when no other adapter
has set it within `fallback_after_s`, so a real host always wins over the clock.
Thread-safe; subscribers are called outside the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.grid import Region, TempoMap, TempoPoint
from bridge.listeners import Listeners

log = logging.getLogger(__name__)

# name -> short description (kept for the GUI and for `snapshot()` ordering)
FIELDS: dict[str, str] = {
    "tempo": "BPM at the play position (or project tempo)",
    "tempo_map": "list of {qn, bpm, num, den} tempo/meter changes, where the host gives them",
    "meter": "(numerator, denominator)",
    "key": "project key, e.g. 'A minor'",
    "playing": "transport running",
    "recording": "transport recording",
    "position_s": "play position in seconds",
    "position_qn": "play position in quarter notes",
    "region_s": "(start, end) of the selected region in seconds",
    "region_qn": "(start, end) of the selected region in quarter notes",
    "selected_track": "index of the selected track (0-based)",
    "selected_track_name": "name of the selected track",
    "sample_rate": "host/project sample rate in Hz",
    "project_name": "project name (used in file names)",
    "project_path": "project folder, where the host gives it",
    "source_file": "audio file that holds the project mix from time 0 (for hosts that cannot render)",
}


@dataclass(frozen=True)
class FieldValue:
    value: Any
    source: str
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, tuple):
            value = list(value)
        return {"value": value, "source": self.source, "updated_at": self.updated_at}


Subscriber = Callable[[dict[str, dict[str, Any]]], None]


class HostState:
    def __init__(self, fallback_after_s: float = 3.0, clock: Callable[[], float] = time.time):
        self._lock = threading.RLock()
        self._fields: dict[str, FieldValue] = {}
        self._subscribers = Listeners("host state")
        self._fallback_after_s = fallback_after_s
        self._clock = clock

    # ---------------------------------------------------------------- writing
    def update(self, source: str, fallback: bool = False, **values: Any) -> dict[str, FieldValue]:
        """Set several fields from one adapter; returns the fields that changed."""
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise KeyError(f"unknown host state field(s): {', '.join(sorted(unknown))}")
        now = self._clock()
        changed: dict[str, FieldValue] = {}
        with self._lock:
            for name, value in values.items():
                current = self._fields.get(name)
                if fallback and current is not None and current.source != source \
                        and now - current.updated_at < self._fallback_after_s:
                    continue
                entry = FieldValue(value, source, now)
                self._fields[name] = entry
                if current is None or current.value != value or current.source != source:
                    changed[name] = entry
        if changed:
            self._subscribers.call({name: entry.to_dict() for name, entry in changed.items()})
        return changed

    def set(self, name: str, value: Any, source: str, fallback: bool = False) -> bool:
        return bool(self.update(source, fallback=fallback, **{name: value}))

    def clear(self, name: str) -> None:
        with self._lock:
            self._fields.pop(name, None)

    # ---------------------------------------------------------------- reading
    def get(self, name: str, default: Any = None) -> Any:
        with self._lock:
            entry = self._fields.get(name)
        return default if entry is None else entry.value

    def field(self, name: str) -> FieldValue | None:
        with self._lock:
            return self._fields.get(name)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """{field: {"value", "source", "updated_at"}} for every field that has been set."""
        with self._lock:
            return {name: self._fields[name].to_dict() for name in FIELDS if name in self._fields}

    def values(self) -> dict[str, Any]:
        """{field: value} for every field that has been set."""
        with self._lock:
            return {name: self._fields[name].value for name in FIELDS if name in self._fields}

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(changed)` on every change, `changed` shaped like `snapshot()`.
        Returns a function that unsubscribes. Callbacks run on the adapter's thread."""
        return self._subscribers.add(callback)

    # ---------------------------------------------------------------- derived
    def tempo_map(self) -> TempoMap | None:
        """The host's tempo map, else a constant map from tempo and meter; None without a tempo."""
        points = self.get("tempo_map")
        if points:
            try:
                return TempoMap([TempoPoint(p["qn"], p["bpm"], p.get("num", 4), p.get("den", 4)) for p in points])
            except Exception as exc:
                log.warning("ignoring unusable tempo map from %s: %s", self.field("tempo_map").source, exc)
        tempo = self.get("tempo")
        if tempo is None:
            return None
        num, den = self.get("meter") or (4, 4)
        return TempoMap.constant(tempo, num, den)

    def region(self) -> Region | None:
        """The selected region in seconds (from region_s, or region_qn through the tempo map)."""
        span = self.get("region_s")
        if span is not None:
            return Region(*span)
        span_qn = self.get("region_qn")
        tempo_map = self.tempo_map()
        if span_qn is not None and tempo_map is not None:
            return Region.from_beats(span_qn[0], span_qn[1], tempo_map)
        return None

    def region_beats(self) -> tuple[float, float] | None:
        """The selected region in quarter notes (from region_qn, or region_s through the tempo map)."""
        span_qn = self.get("region_qn")
        if span_qn is not None and self.get("region_s") is None:
            return float(span_qn[0]), float(span_qn[1])
        region, tempo_map = self.region(), self.tempo_map()
        if region is None or tempo_map is None:
            return None
        return region.to_beats(tempo_map)
