"""MIDI in: clock + song position as a fallback tempo/position source, and note/CC triggers.

Clock maths (MIDI 1.0): 24 clock messages per quarter note; Song Position Pointer counts MIDI
beats (16th notes = 6 clocks). BPM = 60 / (24 * mean clock interval). The interval is smoothed
over a sliding window (USB and virtual ports jitter by about a millisecond), and the estimate
is reset when the clock stops or jumps (a gap longer than `max_gap_s`).

MIDI writes into HostState as a *fallback* source, so a DAW adapter that is talking wins.
Ports need python-rtmidi (`pip install python-rtmidi`, or the project's `midi` extra).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.host_state import HostState

log = logging.getLogger(__name__)

SOURCE = "midi"
CLOCKS_PER_QN = 24
CLOCKS_PER_SPP_UNIT = 6


class MidiUnavailable(RuntimeError):
    """MIDI ports cannot be opened here (no backend, no such port, no virtual ports)."""


class MidiClock:
    """Turns clock/start/stop/continue/songpos messages (with timestamps in seconds) into
    tempo, play state and position in quarter notes."""

    def __init__(self, window: int = 48, max_gap_s: float = 0.5, smoothing: float = 0.2):
        self._times: deque[float] = deque(maxlen=window + 1)
        self.max_gap_s = max_gap_s
        self.smoothing = smoothing  # weight of a new window estimate in the displayed tempo
        self.bpm: float | None = None
        self.playing = False
        self.clocks = 0  # clocks since the song start, counting SPP jumps
        self._last_time: float | None = None

    @property
    def position_qn(self) -> float:
        return self.clocks / CLOCKS_PER_QN

    def feed(self, message: Any, timestamp: float) -> bool:
        """Use one mido message; returns True when tempo, play state or position changed."""
        kind = message.type
        if kind == "clock":
            if self._last_time is not None and timestamp - self._last_time > self.max_gap_s:
                self._times.clear()
            self._last_time = timestamp
            self._times.append(timestamp)
            if self.playing:
                self.clocks += 1
            if len(self._times) >= 3:
                span = self._times[-1] - self._times[0]
                if span > 0:
                    estimate = 60.0 / (CLOCKS_PER_QN * span / (len(self._times) - 1))
                    if self.bpm is None or abs(estimate - self.bpm) > 0.1 * self.bpm:
                        self.bpm = estimate  # first estimate or a real tempo change: jump
                    else:
                        self.bpm += self.smoothing * (estimate - self.bpm)
            return True
        if kind == "start":
            self.playing, self.clocks = True, 0
            return True
        if kind == "continue":
            self.playing = True
            return True
        if kind == "stop":
            self.playing = False
            return True
        if kind == "songpos":
            self.clocks = int(message.pos) * CLOCKS_PER_SPP_UNIT
            return True
        return False


# ------------------------------------------------------------------ trigger mappings
@dataclass(frozen=True)
class MidiMapping:
    kind: str      # "note" or "cc"
    number: int    # note or controller number
    action: str    # bridge action, e.g. "repaint", or "cancel"
    channel: int | None = None  # 1-16; None = any

    def matches(self, message: Any) -> bool:
        if self.channel is not None and getattr(message, "channel", -1) != self.channel - 1:
            return False
        if self.kind == "note":
            return message.type == "note_on" and message.note == self.number and message.velocity > 0
        return message.type == "control_change" and message.control == self.number and message.value >= 64


_MAPPING = re.compile(r"^(note|cc)\s*:?\s*(\d+)(?:\s*@\s*(\d+))?\s*=\s*([a-z_]+)$", re.IGNORECASE)


def parse_mapping(text: str, actions: tuple[str, ...] | None = None) -> MidiMapping:
    """'note:60=repaint', 'cc:20=generate', 'note:36@10=stems' (channel 10)."""
    match = _MAPPING.match(text.strip())
    if not match:
        raise ValueError(f"MIDI mapping {text!r} is not like 'note:60=repaint' or 'cc:20@1=generate'")
    kind, number, channel, action = match.groups()
    number_i = int(number)
    if not 0 <= number_i <= 127:
        raise ValueError(f"MIDI mapping {text!r}: {kind} number must be 0-127")
    channel_i = int(channel) if channel else None
    if channel_i is not None and not 1 <= channel_i <= 16:
        raise ValueError(f"MIDI mapping {text!r}: channel must be 1-16")
    action = action.lower()
    if actions is not None and action not in actions:
        raise ValueError(f"MIDI mapping {text!r}: unknown action '{action}' (one of {', '.join(actions)})")
    return MidiMapping(kind.lower(), number_i, action, channel_i)


class MidiListener:
    """Feeds messages to the clock and mappings; publishes to HostState at most every `publish_s`."""

    def __init__(self, host_state: HostState, mappings: list[MidiMapping] | None = None,
                 on_action: Callable[[str], None] | None = None, publish_s: float = 0.25):
        self.host_state = host_state
        self.clock = MidiClock()
        self.mappings = list(mappings or [])
        self.on_action = on_action
        self.publish_s = publish_s
        self.last_seen: float | None = None
        self._last_publish = 0.0
        self._lock = threading.Lock()

    def handle(self, message: Any, timestamp: float | None = None) -> None:
        now = time.monotonic() if timestamp is None else timestamp
        self.last_seen = time.time()
        with self._lock:
            changed = self.clock.feed(message, now)
        if message.type in ("start", "stop", "continue", "songpos"):
            self.publish(force=True)
        elif changed and now - self._last_publish >= self.publish_s:
            self._last_publish = now
            self.publish()
        for mapping in self.mappings:
            if mapping.matches(message) and self.on_action is not None:
                try:
                    self.on_action(mapping.action)
                except Exception:
                    log.exception("MIDI-triggered action %s failed", mapping.action)

    def publish(self, force: bool = False) -> None:
        values: dict[str, Any] = {"playing": self.clock.playing, "position_qn": self.clock.position_qn}
        if self.clock.bpm is not None:
            values["tempo"] = round(self.clock.bpm, 2)
        self.host_state.update(SOURCE, fallback=True, **values)


def _mido():
    import mido
    try:
        _ = mido.backend.module  # reading it loads the backend (python-rtmidi by default)
    except ImportError as exc:
        raise MidiUnavailable(f"MIDI ports need python-rtmidi ({exc}); install it with "
                              f"`pip install python-rtmidi`, or run the bridge without --midi-in") from None
    return mido


def list_inputs() -> list[str]:
    return list(_mido().get_input_names())


class MidiAdapter:
    """Opens a MIDI input (a named port, or a virtual one where the OS has them)."""

    name = "midi"

    def __init__(self, listener: MidiListener, port_name: str | None = None, virtual: bool = False):
        self.listener = listener
        self.port_name = port_name
        self.virtual = virtual
        self._port = None

    def start(self) -> None:
        mido = _mido()
        name = self.port_name or "ACE Companion"
        if self.virtual:
            if sys.platform.startswith("win"):
                raise MidiUnavailable("Windows has no virtual MIDI ports: install loopMIDI, create a port, and "
                                      "pass its name with --midi-in")
            try:
                self._port = mido.open_input(name, virtual=True, callback=self._callback)
            except (OSError, NotImplementedError) as exc:
                raise MidiUnavailable(f"cannot create virtual MIDI port '{name}': {exc}") from None
            return
        available = mido.get_input_names()
        matches = [p for p in available if p == name] or [p for p in available if name.lower() in p.lower()]
        if not matches:
            raise MidiUnavailable(f"no MIDI input named '{name}'; available: {', '.join(available) or 'none'}")
        self._port = mido.open_input(matches[0], callback=self._callback)

    def _callback(self, message) -> None:
        self.listener.handle(message)

    def stop(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None

    def status(self) -> dict[str, Any]:
        seen = self.listener.last_seen
        return {"connected": self._port is not None and seen is not None and time.time() - seen < 5,
                "last_seen": seen}
