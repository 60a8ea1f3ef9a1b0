"""Ableton Live adapter: AbletonOSC for state, our AceCompanion Remote Script for insertion.

AbletonOSC listens on UDP 11000 and always replies to port 11001 of the sender's IP, so the
bridge binds 127.0.0.1:11001 and sends from that same socket. On (re)connect the adapter asks
for every property it needs and starts listeners, so later changes are pushed to it:
tempo, signature, loop brace (the region: Live has no arrangement time selection in its API),
root note + scale name (the key, Live 12), play state, beat, and the selected track.

Ableton has no render API: the source audio for repaint/cover/stems comes from a file the user
exported (the whole song from bar 1, set with `--source-file` or `/acecomp/source`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from bridge.adapters import AdapterError, HostAdapter
from bridge.host_state import HostState
from bridge.oscio import OscArgumentError, OscEndpoint, float_arg, int_arg, str_arg

log = logging.getLogger(__name__)

SOURCE = "ableton"
ABLETONOSC_PORT = 11000
ABLETONOSC_REPLY_PORT = 11001
INSERT_PORT = 11010

SONG_PROPERTIES = ("tempo", "signature_numerator", "signature_denominator", "loop_start", "loop_length",
                   "root_note", "scale_name", "is_playing", "current_song_time")
# current_song_time is only fetched, not listened to: its listener fires constantly while playing.
LISTENED = ("tempo", "signature_numerator", "signature_denominator", "loop_start", "loop_length",
            "root_note", "scale_name", "is_playing", "beat")

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAJOR_SCALES = {"major", "ionian", "lydian", "mixolydian"}
MINOR_SCALES = {"minor", "aeolian", "dorian", "phrygian", "harmonic minor", "melodic minor", "locrian"}


def key_from_live(root_note: int, scale_name: str) -> str | None:
    """Live's root_note (0 = C) + scale_name -> 'A minor' / 'C# major'; None for other scales."""
    if not 0 <= root_note <= 11:
        return None
    scale = scale_name.strip().lower()
    if scale in MAJOR_SCALES:
        return f"{NOTE_NAMES[root_note]} major"
    if scale in MINOR_SCALES:
        return f"{NOTE_NAMES[root_note]} minor"
    return None


class AbletonAdapter(HostAdapter):
    name = "ableton"
    can_render = False
    can_insert = True
    connected_within_s = 6.0

    def __init__(self, host_state: HostState, *, live_host: str = "127.0.0.1", send_port: int = ABLETONOSC_PORT,
                 listen_host: str = "127.0.0.1", listen_port: int = ABLETONOSC_REPLY_PORT,
                 insert_port: int = INSERT_PORT, ping_s: float = 2.0):
        super().__init__()
        self.host_state = host_state
        self.osc = OscEndpoint(listen_host, listen_port, "ableton")
        self.live_address = (live_host, send_port)
        self.insert_address = (live_host, insert_port)
        self.ping_s = ping_s
        self._song: dict[str, Any] = {}
        self._subscribed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: dict[str, tuple[threading.Event, list]] = {}
        self.insert_script_seen: float | None = None
        self._query_waiters: dict[tuple, list] = {}  # (reply address, echoed ids) -> waiting queries
        self._query_mapped: set[str] = set()
        self._map_osc()

    @property
    def listen_port(self) -> int:
        return self.osc.port

    def status(self) -> dict[str, Any]:
        """Adds whether the AceCompanion Remote Script (clip insertion) answers."""
        seen = self.insert_script_seen
        return {**super().status(), "insert_script": seen is not None and time.time() - seen < 3 * self.ping_s + 1}

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.osc.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._keepalive, name="ableton-ping", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        if self._subscribed:
            for prop in LISTENED:
                self.send(f"/live/song/stop_listen/{prop}")
            self.send("/live/view/stop_listen/selected_track")
        self.osc.stop()

    def send(self, address: str, *args: Any) -> None:
        self.osc.send(self.live_address, address, *args)

    def _keepalive(self) -> None:
        while True:
            was_connected = self.connected()
            self.send("/live/test")
            self.osc.send(self.insert_address, "/acecomp/live/ping")
            if self._stop.wait(self.ping_s):
                return
            if not self.connected():
                self._subscribed = False
            elif not self._subscribed or not was_connected:
                self.subscribe()

    def subscribe(self) -> None:
        """Ask for every property and start the listeners (again after Live restarts)."""
        for prop in SONG_PROPERTIES:
            self.send(f"/live/song/get/{prop}")
        for prop in LISTENED:
            self.send(f"/live/song/start_listen/{prop}")
        self.send("/live/view/get/selected_track")
        self.send("/live/view/start_listen/selected_track")
        self._subscribed = True

    # ------------------------------------------------------------- OSC from Live
    def _map_osc(self) -> None:
        self.osc.map("/live/test", self._on_test)
        self.osc.map("/live/startup", self._on_startup)
        self.osc.map("/live/error", self._on_error)
        self.osc.map("/live/song/get/*", self._on_song_property)
        self.osc.map("/live/view/get/selected_track", self._on_selected_track)
        self.osc.map("/acecomp/live/pong", self._on_pong)
        self.osc.map("/acecomp/live/inserted", self._on_inserted)
        self.osc.map("/acecomp/live/error", self._on_error)

    def _on_test(self, sender, address, *args):
        first = not self.connected()
        self.seen()
        if first or not self._subscribed:
            self.subscribe()

    def _on_startup(self, sender, address, *args):
        self.seen()
        self.subscribe()

    def _on_error(self, sender, address, *args):
        log.warning("Live reported an error: %s", " ".join(str(a) for a in args))

    def _on_pong(self, sender, address, *args):
        self.insert_script_seen = time.time()

    def _bad(self, address: str, exc: Exception) -> None:
        self.errors += 1
        log.warning("AbletonOSC sent a malformed %s: %s", address, exc)

    def _on_song_property(self, sender, address, *args):
        self.seen()
        prop = address.rsplit("/", 1)[-1]
        if prop not in SONG_PROPERTIES + LISTENED:  # e.g. track_names: the answer to a query()
            return
        try:
            if prop == "scale_name":
                value: Any = str_arg(args, 0, prop)
            elif prop in ("is_playing", "loop"):
                value = bool(float_arg(args, 0, prop))
            else:
                value = float_arg(args, 0, prop)
        except OscArgumentError as exc:
            return self._bad(address, exc)
        self._song[prop] = value
        self._apply(prop)

    def _apply(self, prop: str) -> None:
        song, update = self._song, {}
        if prop == "tempo" and song["tempo"] > 0:
            update["tempo"] = song["tempo"]
        elif prop in ("signature_numerator", "signature_denominator"):
            num, den = song.get("signature_numerator"), song.get("signature_denominator")
            if num and den and num == int(num) and den == int(den):
                update["meter"] = (int(num), int(den))
        elif prop in ("loop_start", "loop_length"):
            start, length = song.get("loop_start"), song.get("loop_length")
            if start is not None and length is not None:
                if start < 0 or length <= 0:
                    return self._bad(prop, ValueError(f"loop brace {start}+{length} beats is not a region"))
                update["region_qn"] = (start, start + length)
                update["region_s"] = None  # the loop brace in beats is the region now
        elif prop in ("root_note", "scale_name"):
            root, scale = song.get("root_note"), song.get("scale_name")
            if root is not None and scale is not None:
                update["key"] = key_from_live(int(root), scale)
        elif prop == "is_playing":
            update["playing"] = song["is_playing"]
        elif prop in ("current_song_time", "beat"):
            update["position_qn"] = song[prop]
            tempo_map = self.host_state.tempo_map()
            if tempo_map is not None and song[prop] >= 0:
                update["position_s"] = tempo_map.qn_to_seconds(song[prop])
        if update:
            self.host_state.update(SOURCE, **update)

    def _on_selected_track(self, sender, address, *args):
        self.seen()
        try:
            index = int_arg(args, 0, "selected_track")
        except OscArgumentError as exc:
            return self._bad(address, exc)
        self.host_state.update(SOURCE, selected_track=index)

    # ------------------------------------------------------------- insertion
    def _on_inserted(self, sender, address, *args):
        req = str(args[0]) if args else ""
        waiter = self._pending.get(req)
        if waiter is not None:
            waiter[1].extend(args[1:])
            waiter[0].set()

    def insert(self, path: str, position_s: float, *, track: int | None = None, new_track: bool = False,
               track_name: str = "", replace: bool = False, length_s: float | None = None,
               group: str = "", timeout_s: float = 10.0) -> None:
        tempo_map = self.host_state.tempo_map()
        if tempo_map is None:
            raise AdapterError("Live's tempo is unknown; is AbletonOSC running?")
        beats = tempo_map.seconds_to_qn(position_s)
        req = uuid.uuid4().hex[:10]
        done, answer = threading.Event(), []
        self._pending[req] = (done, answer)
        try:
            self.osc.send(self.insert_address, "/acecomp/live/insert", req, -1 if track is None else int(track),
                          path, float(beats), int(new_track), track_name)
            if not done.wait(timeout_s):
                raise AdapterError("the AceCompanion Remote Script did not answer: install it and select it as a "
                                   "Control Surface (Live 12), or drag the clip from the ACE Companion window")
        finally:
            self._pending.pop(req, None)
        if not answer or answer[0] != "ok":
            raise AdapterError(f"Live could not insert the clip: {answer[1] if len(answer) > 1 else answer}")

    # ------------------------------------------------------------- queries (Sketch -> part)
    def query(self, address: str, *args: Any, timeout_s: float = 5.0, match: tuple = ()) -> tuple:
        """Send a getter to AbletonOSC and wait for its reply on the same address; `match` is
        the leading values the reply must echo (AbletonOSC echoes the track/clip ids)."""
        waiters = self._query_waiters
        if address not in self._query_mapped:
            self._query_mapped.add(address)
            self.osc.map(address, self._on_query_reply)
        done, box = threading.Event(), []
        key = (address, tuple(match))
        waiters.setdefault(key, []).append((done, box))
        try:
            self.send(address, *args)
            if not done.wait(timeout_s):
                raise AdapterError(f"Live did not answer {address} within {timeout_s:.0f} s: is AbletonOSC running?")
        finally:
            entries = waiters.get(key, [])
            if (done, box) in entries:
                entries.remove((done, box))
        return tuple(box)

    def _on_query_reply(self, sender, address, *args):
        self.seen()
        waiters = self._query_waiters
        for (wanted, match), entries in list(waiters.items()):
            if wanted == address and tuple(args[:len(match)]) == match and entries:
                done, box = entries.pop(0)
                box.extend(args)
                done.set()
                return

    # ------------------------------------------------------------- Jam: one named track
    def insert_on_named_track(self, path: str, position_s: float, track_name: str, *, length_s: float | None = None,
                              timeout_s: float = 10.0) -> None:
        """Insert on the track called `track_name`, or on a new track of that name when Live has none."""
        names = [str(n) for n in self.query("/live/song/get/track_names", timeout_s=min(timeout_s, 5.0))]
        if track_name in names:
            self.insert(path, position_s, track=names.index(track_name), length_s=length_s, timeout_s=timeout_s)
        else:
            self.insert(path, position_s, new_track=True, track_name=track_name, length_s=length_s,
                        timeout_s=timeout_s)
