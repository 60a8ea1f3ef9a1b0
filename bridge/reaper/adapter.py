"""REAPER adapter: OSC feedback from REAPER's default pattern, the web interface for the meter,
and a file mailbox shared with the `ace_companion.lua` ReaScript for everything else.

Why a mailbox: REAPER's Lua has no sockets, and its OSC `OscLocalMessageToHost` only talks to
REAPER itself. The script runs as a deferred loop; it writes `state.txt` (time selection,
tempo/meter map, key, project name and rate, selected track) whenever something changes and
once a second as a heartbeat, and executes command files the bridge drops in the folder:

    cmd-<id>.txt   lines `key=value`; command=render|insert plus its fields
    cmd-<id>.done  the script's answer: `ok=1` (and `path=`) or `error=<message>`

Files are written to a temporary name and renamed, so neither side reads half a file. With
`wake_action` (the command id of ace_companion_wake.lua) the adapter runs that action over
REAPER's OSC right after dropping a command, so the script answers at once; without it the
script's own 0.1 s look is the fallback. The adapter waits for the reply on folder events.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from bridge.adapters import AdapterError, HostAdapter
from bridge.host_state import HostState
from bridge.oscio import OscArgumentError, OscEndpoint, float_arg
from bridge.reaper.folder_events import FolderEvents

log = logging.getLogger(__name__)

SOURCE = "reaper"
STATE_FILE = "state.txt"


def default_mailbox() -> str:
    return os.path.join(os.path.expanduser("~"), ".ace-companion", "reaper")


def parse_kv(text: str) -> dict[str, Any]:
    """`key=value` lines -> dict; a key given several times (`marker`) becomes a list."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        if key == "marker":
            out.setdefault("marker", []).append(value.strip())
        else:
            out[key] = value.strip()
    return out


def format_kv(fields: dict[str, Any]) -> str:
    lines = []
    for key, value in fields.items():
        if isinstance(value, bool):
            value = int(value)
        text = str(value)
        if "\n" in text or "\r" in text:
            raise ValueError(f"mailbox field {key} contains a line break")
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


class ReaperMailbox:
    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    @property
    def state_path(self) -> str:
        return os.path.join(self.folder, STATE_FILE)

    def read_state(self) -> dict[str, Any] | None:
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                return parse_kv(fh.read())
        except FileNotFoundError:
            return None

    def send(self, command: str, **fields: Any) -> str:
        cmd_id = uuid.uuid4().hex[:12]
        _write_atomic(os.path.join(self.folder, f"cmd-{cmd_id}.txt"),
                      format_kv({"command": command, "id": cmd_id, **fields}))
        return cmd_id

    def wait(self, cmd_id: str, timeout_s: float) -> dict[str, Any]:
        """The script's reply, as soon as it is renamed into the folder (no polling loop)."""
        done = os.path.join(self.folder, f"cmd-{cmd_id}.done")
        deadline = time.monotonic() + timeout_s
        with FolderEvents(self.folder) as events:  # watch first, then look: no reply slips between
            while True:
                if os.path.exists(done):
                    with open(done, encoding="utf-8") as fh:
                        reply = parse_kv(fh.read())
                    os.remove(done)
                    return reply
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                events.wait(remaining)
        # Withdraw the command so a late script does not act on it.
        try:
            os.remove(os.path.join(self.folder, f"cmd-{cmd_id}.txt"))
        except FileNotFoundError:
            pass
        raise AdapterError(f"REAPER did not answer within {timeout_s:.0f} s: is ace_companion.lua running "
                           f"(Actions > ace_companion.lua) and watching {self.folder}?")


def state_from_mailbox(fields: dict[str, Any]) -> dict[str, Any]:
    """Turn the script's `state.txt` fields into HostState values (bad fields are skipped)."""
    out: dict[str, Any] = {}

    def num(key: str) -> float | None:
        try:
            value = float(fields[key])
        except (KeyError, ValueError):
            return None
        return value if value == value and abs(value) != float("inf") else None

    start, end = num("sel_start"), num("sel_end")
    if start is not None and end is not None:
        # no time selection (REAPER reports 0..0) clears the region, never keeps the old one
        out["region_s"] = (start, end) if 0 <= start < end else None
    if (tempo := num("tempo")) and tempo > 0:
        out["tempo"] = tempo
    meter = str(fields.get("meter", ""))
    if "/" in meter:
        try:
            num_, den_ = (int(x) for x in meter.split("/", 1))
            out["meter"] = (num_, den_)
        except ValueError:
            pass
    markers = []
    for line in fields.get("marker", []):
        parts = line.split()
        try:
            time_s, bpm, m_num, m_den = float(parts[0]), float(parts[1]), int(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            continue
        markers.append((time_s, bpm, m_num, m_den))
    if markers:
        from bridge.grid import GridError, TempoMap
        try:
            out["tempo_map"] = [{k: p[k] for k in ("qn", "bpm", "num", "den")}
                                for p in TempoMap.from_seconds(markers).to_list()]
        except GridError as exc:
            log.warning("REAPER tempo map ignored: %s", exc)
    else:
        out["tempo_map"] = None
    if fields.get("key"):
        out["key"] = fields["key"]
    if (rate := num("sample_rate")) and rate >= 8000:
        out["sample_rate"] = int(rate)
    if fields.get("project_name"):
        out["project_name"] = fields["project_name"]
    if fields.get("project_path"):
        out["project_path"] = fields["project_path"]
    track = num("track")
    if track is not None and track >= 0:
        out["selected_track"] = int(track)
        out["selected_track_name"] = fields.get("track_name", "")
    if (play := num("play_state")) is not None:
        out["playing"] = bool(int(play) & 1)
        out["recording"] = bool(int(play) & 4)
    return out


class ReaperAdapter(HostAdapter):
    name = "reaper"
    can_render = True
    can_insert = True

    def __init__(self, host_state: HostState, *, listen_host: str = "127.0.0.1", listen_port: int = 9000,
                 reaper_host: str = "127.0.0.1", reaper_port: int = 8000, mailbox: str | None = None,
                 web_url: str | None = None, poll_s: float = 0.2, wake_action: str | None = None):
        super().__init__()
        self.host_state = host_state
        self.osc = OscEndpoint(listen_host, listen_port, "reaper")
        self.reaper_address = (reaper_host, reaper_port)
        self.mailbox = ReaperMailbox(mailbox or default_mailbox())
        self.web_url = web_url.rstrip("/") if web_url else None
        self.poll_s = poll_s
        # command id of ace_companion_wake.lua (e.g. "_RS1a2b..."): run over OSC after each command
        self.wake_action = ("_" + wake_action.lstrip("_")) if wake_action else None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._state_mtime: float | None = None
        self._loop: dict[str, float] = {}
        self.edge_pair_s = 0.05
        self._edge_lock = threading.Lock()
        self._edges_pending: set[str] = set()
        self._edge_timer: threading.Timer | None = None
        self._map_osc()

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.osc.start()
        self._stop.clear()
        self._threads = [threading.Thread(target=self._poll_mailbox, name="reaper-mailbox", daemon=True)]
        if self.web_url:
            self._threads.append(threading.Thread(target=self._poll_web, name="reaper-web", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with self._edge_lock:
            if self._edge_timer is not None:
                self._edge_timer.cancel()
        for t in self._threads:
            t.join(timeout=3)
        self.osc.stop()

    @property
    def listen_port(self) -> int:
        return self.osc.port

    # ------------------------------------------------------------- OSC from REAPER
    def _map_osc(self) -> None:
        self.osc.map("/tempo/raw", self._float_field("tempo", "tempo", positive=True))
        self.osc.map("/time", self._float_field("position_s", "time"))
        self.osc.map("/loop/start/time", self._loop_edge("start"))
        self.osc.map("/loop/end/time", self._loop_edge("end"))
        self.osc.map("/play", self._transport("playing"))
        self.osc.map("/record", self._transport("recording"))
        self.osc.map("/stop", self._stopped)
        self.osc.map("/track/*/select", self._track_select)
        self.osc.on_unknown(lambda sender, address, *args: self.seen())  # REAPER sends lots; all prove it lives

    def _bad(self, address: str, exc: Exception) -> None:
        self.errors += 1
        log.warning("REAPER sent a malformed %s: %s", address, exc)

    def _float_field(self, field: str, label: str, positive: bool = False):
        def handler(sender, address, *args):
            self.seen()
            try:
                value = float_arg(args, 0, label)
                if positive and value <= 0:
                    raise OscArgumentError(f"'{label}' must be positive, got {value}")
            except OscArgumentError as exc:
                return self._bad(address, exc)
            self.host_state.update(SOURCE, **{field: value})
        return handler

    def _loop_edge(self, edge: str):
        """REAPER sends the two loop edges as separate messages, and only the ones that changed.
        An edge waits for its partner (up to `edge_pair_s`), so a selection that moves never
        shows a region mixing its new start with its old end."""
        def handler(sender, address, *args):
            self.seen()
            try:
                value = float_arg(args, 0, f"loop {edge}")
                if value < 0:
                    raise OscArgumentError(f"loop {edge} {value} is negative")
            except OscArgumentError as exc:
                return self._bad(address, exc)
            with self._edge_lock:
                self._loop[edge] = value
                self._edges_pending.add(edge)
                if self._edge_timer is not None:
                    self._edge_timer.cancel()
                    self._edge_timer = None
                if self._edges_pending != {"start", "end"}:
                    self._edge_timer = threading.Timer(self.edge_pair_s, self._apply_loop)
                    self._edge_timer.daemon = True
                    self._edge_timer.start()
                    return
            self._apply_loop()
        return handler

    def _apply_loop(self) -> None:
        with self._edge_lock:
            if self._edge_timer is not None:
                self._edge_timer.cancel()
                self._edge_timer = None
            self._edges_pending.clear()
            start, end = self._loop.get("start"), self._loop.get("end")
        if start is None or end is None:
            return
        # REAPER links loop points to the time selection by default; no selection = 0..0 = no region.
        # The script's time selection (when running) updates the same field.
        self.host_state.update(SOURCE, region_s=(start, end) if end > start else None)

    def _transport(self, field: str):
        def handler(sender, address, *args):
            self.seen()
            try:
                value = float_arg(args, 0, field)
            except OscArgumentError as exc:
                return self._bad(address, exc)
            self.host_state.update(SOURCE, **{field: value >= 0.5})
        return handler

    def _stopped(self, sender, address, *args):
        self.seen()
        if not args or (isinstance(args[0], (int, float)) and args[0] >= 0.5):
            self.host_state.update(SOURCE, playing=False, recording=False)

    def _track_select(self, sender, address, *args):
        self.seen()
        try:
            index = int(address.split("/")[2])
            selected = float_arg(args, 0, "select")
        except (ValueError, IndexError, OscArgumentError) as exc:
            return self._bad(address, exc)
        if selected >= 0.5 and index >= 1:
            self.host_state.update(SOURCE, selected_track=index - 1)

    def send(self, address: str, *args: Any) -> None:
        """Send an OSC message to REAPER (e.g. `/action/_RS...` to run a script)."""
        self.osc.send(self.reaper_address, address, *args)

    # ------------------------------------------------------------- mailbox
    def _poll_mailbox(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_mailbox_once()
            except Exception:
                log.exception("reading the REAPER mailbox failed")

    def poll_mailbox_once(self) -> bool:
        try:
            mtime = os.stat(self.mailbox.state_path).st_mtime
        except FileNotFoundError:
            return False
        if mtime == self._state_mtime:
            return False
        self._state_mtime = mtime
        fields = self.mailbox.read_state()
        if not fields:
            return False
        self.seen()
        values = state_from_mailbox(fields)
        if values:
            self.host_state.update(SOURCE, **values)
        return True

    # ------------------------------------------------------------- web interface
    def _poll_web(self) -> None:
        import httpx
        with httpx.Client(timeout=2.0) as http:
            while not self._stop.wait(1.0):
                try:
                    text = http.get(f"{self.web_url}/_/BEATPOS;TRANSPORT").text
                except httpx.HTTPError as exc:
                    log.debug("REAPER web interface not reachable: %s", exc)
                    continue
                self.apply_web_reply(text)

    def apply_web_reply(self, text: str) -> None:
        """Use a web-interface reply (`BEATPOS` / `TRANSPORT` lines, tab-separated)."""
        for line in text.splitlines():
            parts = line.split("\t")
            try:
                if parts[0] == "BEATPOS":
                    if len(parts) < 8:
                        raise ValueError(f"BEATPOS has {len(parts) - 1} fields, expected 7")
                    self.seen()
                    play = int(parts[1])
                    self.host_state.update(SOURCE, playing=bool(play & 1), position_s=float(parts[2]),
                                           meter=(int(parts[6]), int(parts[7])))
                elif parts[0] == "TRANSPORT" and len(parts) >= 3:
                    self.seen()
                    self.host_state.update(SOURCE, playing=bool(int(parts[1]) & 1))
            except ValueError as exc:
                self._bad("web " + parts[0], exc)

    # ------------------------------------------------------------- render / insert
    def _command(self, command: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        cmd_id = self.mailbox.send(command, **fields)
        if self.wake_action:  # the script answers now instead of at its next look (0.1 s)
            self.send(f"/action/{self.wake_action}")
        reply = self.mailbox.wait(cmd_id, timeout_s)
        if reply.get("error"):
            raise AdapterError(f"REAPER {command} failed: {reply['error']}")
        if reply.get("ok") != "1":
            raise AdapterError(f"REAPER {command} gave no result (reply: {reply})")
        return reply

    def render(self, start_s: float, end_s: float, dest_path: str, timeout_s: float = 120.0,
               source: str = "master") -> str:
        return self.render_if_changed(start_s, end_s, dest_path, None, timeout_s, source)[0]

    def render_if_changed(self, start_s: float, end_s: float, dest_path: str, since: str | None,
                          timeout_s: float = 120.0, source: str = "master",
                          sample_rate: int | None = None) -> tuple[str | None, str | None]:
        """Render unless the project is unchanged since the render that returned version `since`.
        Returns (path or None when unchanged, the project's change count as the new version)."""
        dest_path = os.path.abspath(dest_path)
        os.makedirs(os.path.dirname(dest_path), exist_ok=True)
        fields = {"start": f"{start_s:.9f}", "end": f"{end_s:.9f}", "path": dest_path, "source": source}
        if since:
            fields["unchanged_since"] = since
        if sample_rate:
            fields["rate"] = int(sample_rate)
        reply = self._command("render", timeout_s, **fields)
        version = reply.get("change_count") or None
        if reply.get("unchanged") == "1":
            return None, version
        path = reply.get("path") or dest_path
        if not os.path.exists(path):
            raise AdapterError(f"REAPER reported a finished render but {path} does not exist")
        return path, version

    def insert(self, path: str, position_s: float, *, track: int | None = None, new_track: bool = False,
               track_name: str = "", replace: bool = False, length_s: float | None = None,
               group: str = "", timeout_s: float = 30.0) -> None:
        self._command("insert", timeout_s, path=os.path.abspath(path), position=f"{position_s:.9f}",
                      track=-1 if track is None else int(track), new_track=new_track,
                      track_name=track_name.replace("\n", " "), replace=replace,
                      length="" if length_s is None else f"{length_s:.9f}", group=group)

    # ------------------------------------------------------------- MIDI (Sketch -> part)
    def read_midi(self, dest_path: str, timeout_s: float = 15.0) -> str:
        """The notes of the selected MIDI item(s) as text (see bridge/sketch.parse_reaper_notes)."""
        dest_path = os.path.abspath(dest_path)
        os.makedirs(os.path.dirname(dest_path), exist_ok=True)
        reply = self._command("read_midi", timeout_s, path=dest_path)
        path = reply.get("path") or dest_path
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except OSError as exc:
            raise AdapterError(f"REAPER reported the MIDI notes in {path} but it cannot be read: {exc}") from None
        finally:
            try:
                os.remove(path)
            except OSError:
                pass

    # ------------------------------------------------------------- Jam: one named track
    def insert_on_named_track(self, path: str, position_s: float, track_name: str, *, length_s: float | None = None,
                              timeout_s: float = 30.0) -> None:
        """Insert on the track called `track_name` (made at the end of the project when missing)."""
        self._command("insert_named", timeout_s, path=os.path.abspath(path), position=f"{position_s:.9f}",
                      track=-1, new_track=0, track_name=track_name.replace("\n", " "), replace=0,
                      length="" if length_s is None else f"{length_s:.9f}")
