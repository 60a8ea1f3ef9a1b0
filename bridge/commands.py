"""The `/acecomp/...` OSC namespace: trigger actions, set host state by hand, get replies.

Requests (UDP, default 127.0.0.1:9110):
  /acecomp/generate|repaint|continue|cover|stems|extract [settings]
      settings: nothing, one JSON object string ('{"caption": "lofi", "seed": 3}'), or
      key/value pairs ("caption", "lofi", "seed", 3). Bridge keys: region (use "start"/"end"
      pairs in seconds), bars (continue), stems ("drums,bass"), insert (replace/add/new_track/none).
  /acecomp/sketch [settings]          the selected MIDI clip (or midi_path <file.mid>) -> a produced part
  /acecomp/jam/start [settings]       jam ahead of the playhead (settings + bars, lookahead, track)
  /acecomp/jam/stop   /acecomp/jam/prompt <caption>
  /acecomp/cancel [job_id]            cancel a job, or the latest running action
  /acecomp/insert <path> [position_s] [new_track 0|1]
  /acecomp/region <start_s> <end_s>   /acecomp/region/beats <start_qn> <end_qn>
  /acecomp/tempo <bpm>  /acecomp/meter <num> <den>  /acecomp/key <"A minor">
  /acecomp/source <path>  /acecomp/project <name>  /acecomp/samplerate <hz>
  /acecomp/status  /acecomp/ping

Replies (to the sender's port, or the configured reply port):
  /acecomp/job <action> <job_id> <action_id>
  /acecomp/progress <job_id> <stage> <step> <total> <percent>
  /acecomp/result <job_id> <path> <position_s> <inserted 0|1> <message>
  /acecomp/done <action_id> <state>
  /acecomp/jam/chunk <index> <start_s> <end_s> <path> <inserted 0|1>
  /acecomp/jam/skip <from_s> <to_s>   /acecomp/jam/state <running|stopped> <message>
  /acecomp/sketch <synth> <message>   which synth rendered a MIDI sketch (builtin: no SoundFont found)
  /acecomp/error <what> <message>
  /acecomp/ok <what>   /acecomp/status <json>   /acecomp/pong
  /acecomp/queued <action> <position>   (an action waits: at most 2 prepare at once)

Addresses are exact: a pattern (`/acecomp/*`) is refused with /acecomp/error.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from bridge.actions import ACTION_NAMES
from bridge.errors import BridgeError
from bridge.grid import GridError, Region, check_meter, check_tempo
from bridge.oscio import OscArgumentError, OscEndpoint, float_arg, int_arg, str_arg

log = logging.getLogger(__name__)

SOURCE = "osc"
PREFIX = "/acecomp"
# Preparing an action may hold a rendered or read source window in memory (hundreds of MiB for
# a long song): only this many prepare at once; this many more wait; beyond that, "busy".
MAX_PREPARING_ACTIONS = 2
MAX_WAITING_ACTIONS = 8
# Folders (os.pathsep-separated) besides the clip folder and --source-file's folder where
# /acecomp/source may point.
SOURCE_DIRS_ENV = "ACE_COMPANION_SOURCE_DIRS"


class ActionGate:
    """Runs at most `running` pieces of work at once on its own threads; queues up to `waiting` more."""

    def __init__(self, running: int = MAX_PREPARING_ACTIONS, waiting: int = MAX_WAITING_ACTIONS):
        self.max_running = running
        self.max_waiting = waiting
        self._lock = threading.Lock()
        self._waiting: deque[Callable[[], None]] = deque()
        self._running = 0

    def offer(self, work: Callable[[], None], name: str = "action") -> int | None:
        """0 when `work` starts now, its place in line when it waits, None when the line is full."""
        with self._lock:
            if self._running < self.max_running:
                self._running += 1
            elif len(self._waiting) < self.max_waiting:
                self._waiting.append(work)
                return len(self._waiting)
            else:
                return None
        threading.Thread(target=self._drain, args=(work,), name=f"osc-{name}", daemon=True).start()
        return 0

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self._running, len(self._waiting)

    def _drain(self, work: Callable[[], None] | None) -> None:
        while work is not None:
            try:
                work()
            except Exception:
                log.exception("OSC action failed")
            with self._lock:
                work = self._waiting.popleft() if self._waiting else None
                if work is None:
                    self._running -= 1


def parse_settings(args: tuple) -> dict[str, Any]:
    """OSC arguments -> overrides dict (see the module docstring)."""
    if not args:
        return {}
    if len(args) == 1 and isinstance(args[0], str) and args[0].lstrip().startswith("{"):
        try:
            settings = json.loads(args[0])
        except json.JSONDecodeError as exc:
            raise OscArgumentError(f"settings are not valid JSON: {exc.msg}") from None
        if not isinstance(settings, dict):
            raise OscArgumentError("settings JSON must be an object")
        return settings
    if len(args) % 2:
        raise OscArgumentError("settings must be key/value pairs (an even number of arguments) or one JSON object")
    settings: dict[str, Any] = {}
    for key, value in zip(args[::2], args[1::2]):
        if not isinstance(key, str) or not key:
            raise OscArgumentError(f"setting names must be strings, got {key!r}")
        if isinstance(value, float) and value != value:
            raise OscArgumentError(f"setting '{key}' is NaN")
        settings[key] = value
    if "start" in settings or "end" in settings:
        try:
            settings["region"] = [float(settings.pop("start")), float(settings.pop("end"))]
        except (KeyError, TypeError, ValueError):
            raise OscArgumentError("a region needs both 'start' and 'end' in seconds") from None
    return settings


class CommandServer:
    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 9110, reply_port: int | None = None):
        self.app = app
        self.reply_port = reply_port
        self.osc = OscEndpoint(host, port, "commands")
        for action in ACTION_NAMES + ("sketch",):  # sketch: MIDI clip -> part (bridge/sketch.py)
            self.osc.map(f"{PREFIX}/{action}", self._action)
        handlers = {
            "cancel": self._cancel, "insert": self._insert, "region": self._region,
            "region/beats": self._region_beats, "tempo": self._tempo, "meter": self._meter, "key": self._key,
            "source": self._source, "project": self._project, "samplerate": self._samplerate,
            "status": self._status, "ping": self._ping,
        }
        handlers.update({"jam/start": self._jam_start, "jam/stop": self._jam_stop, "jam/prompt": self._jam_prompt})
        for name, handler in handlers.items():
            self.osc.map(f"{PREFIX}/{name}", self._guard(name, handler))
        self.osc.on_unknown(self._unknown)
        self.osc.on_refused(lambda sender, address, reason: self.error(sender, address, reason))
        self.gate = ActionGate()
        self.errors = 0

    @property
    def port(self) -> int:
        return self.osc.port

    def start(self) -> None:
        self.osc.start()

    def stop(self) -> None:
        self.osc.stop()

    # ------------------------------------------------------------- replies
    def _target(self, sender: tuple[str, int]) -> tuple[str, int]:
        return (sender[0], self.reply_port) if self.reply_port else (sender[0], sender[1])

    def reply(self, sender: tuple[str, int], address: str, *args: Any) -> None:
        self.osc.send(self._target(sender), f"{PREFIX}/{address}", *args)

    def error(self, sender: tuple[str, int], what: str, message: str) -> None:
        self.errors += 1
        log.warning("OSC %s from %s:%s: %s", what, sender[0], sender[1], message)
        self.reply(sender, "error", what, message)

    def _guard(self, name: str, handler):
        def wrapped(sender, address, *args):
            try:
                handler(sender, *args)
            except (OscArgumentError, GridError, ValueError, BridgeError) as exc:  # the user's to fix
                self.error(sender, name, str(exc))
            except Exception as exc:  # anything else: say so, keep serving
                log.exception("OSC %s failed", address)
                self.error(sender, name, f"{type(exc).__name__}: {exc}")
        return wrapped

    def _unknown(self, sender, address, *args):
        self.error(sender, address, f"unknown address {address} (see README: OSC namespace)")

    # ------------------------------------------------------------- actions
    def _action(self, sender, address, *args):
        action = address.rsplit("/", 1)[-1]
        try:
            settings = parse_settings(args)
            if action == "sketch":
                self._check_sketch_paths(settings)
        except OscArgumentError as exc:
            return self.error(sender, action, str(exc))
        # Preparing may render in the DAW (seconds): do it off the OSC thread so cancel still works.
        place = self.gate.offer(lambda: self._run(sender, action, settings), action)
        if place is None:
            return self.error(sender, action, f"busy: {self.gate.max_running} actions are being prepared and "
                                              f"{self.gate.max_waiting} wait; send it again when one is done")
        if place:
            self.reply(sender, "queued", action, place)

    def _run(self, sender, action: str, settings: dict[str, Any]) -> None:
        def notify(event: dict[str, Any]) -> None:
            kind = event["type"]
            if kind == "job":
                for job_id in event["job_ids"]:
                    self.reply(sender, "job", action, job_id, event["action_id"])
            elif kind == "progress":
                self.reply(sender, "progress", event["job_id"], event["stage"], int(event["step"]),
                           int(event["total"]), float(event["percent"]))
            elif kind == "result":
                self.reply(sender, "result", event["job_id"], event["path"], float(event["position_s"]),
                           int(bool(event["inserted"])), event.get("message") or "")
            elif kind == "error":
                self.reply(sender, "error", event.get("job_id") or action, event["message"])
            elif kind == "done":
                self.reply(sender, "done", event["action_id"], event["state"])
            elif kind == "sketch":  # which synth rendered the MIDI sketch, and why
                self.reply(sender, "sketch", event["synth"], event["message"])
        try:
            self.app.run_action(action, settings, notify=notify)
        except Exception as exc:
            self.error(sender, action, str(exc))

    # ------------------------------------------------------------- jam (bridge/jam.py)
    def _jam_start(self, sender, *args):
        from bridge.jam import JamError, jam_controller
        settings = parse_settings(args)

        def notify(event: dict[str, Any]) -> None:
            kind = event["type"]
            if kind == "jam_chunk":
                self.reply(sender, "jam/chunk", int(event["index"]), float(event["start_s"]), float(event["end_s"]),
                           event.get("path") or "", int(bool(event["inserted"])))
            elif kind == "jam_skip":
                self.reply(sender, "jam/skip", float(event["from_s"]), float(event["to_s"]))
            elif kind == "jam_state":
                self.reply(sender, "jam/state", event["state"], event.get("message") or "")
        try:
            jam_controller(self.app).start(settings, notify)
        except JamError as exc:
            self.error(sender, "jam/start", str(exc))

    def _jam_stop(self, sender, *args):
        from bridge.jam import jam_controller
        if not jam_controller(self.app).stop():
            return self.error(sender, "jam/stop", "jam is not running")
        self.reply(sender, "ok", "jam/stop")

    def _jam_prompt(self, sender, *args):
        from bridge.jam import JamError, jam_controller
        try:
            jam_controller(self.app).prompt(str_arg(args, 0, "caption"))
        except JamError as exc:
            return self.error(sender, "jam/prompt", str(exc))
        self.reply(sender, "ok", "jam/prompt")

    def _cancel(self, sender, *args):
        job_id = str_arg(args, 0, "job_id") if args else None
        cancelled = self.app.cancel(job_id)
        if not cancelled:
            return self.error(sender, "cancel", "nothing to cancel")
        self.reply(sender, "ok", "cancel", ",".join(cancelled))

    def _insert(self, sender, *args):
        path = str_arg(args, 0, "path")
        position = float_arg(args, 1, "position_s") if len(args) > 1 else None
        new_track = bool(int_arg(args, 2, "new_track")) if len(args) > 2 else False
        inserted = self.app.insert_result(path, position, new_track)
        self.reply(sender, "ok" if inserted else "error", "insert",
                   path if inserted else "no DAW took the clip: drag it into the DAW from the clip folder")

    # ------------------------------------------------------------- manual host state
    def _region(self, sender, *args):
        region = Region(float_arg(args, 0, "start_s"), float_arg(args, 1, "end_s"))
        self.app.host_state.update(SOURCE, region_s=(region.start_s, region.end_s), region_qn=None)
        self.reply(sender, "ok", "region")

    def _region_beats(self, sender, *args):
        start, end = float_arg(args, 0, "start_qn"), float_arg(args, 1, "end_qn")
        if start < 0 or end <= start:
            raise OscArgumentError(f"region {start}..{end} beats must start at >= 0 and end after its start")
        self.app.host_state.update(SOURCE, region_qn=(start, end), region_s=None)
        self.reply(sender, "ok", "region")

    def _tempo(self, sender, *args):
        self.app.host_state.update(SOURCE, tempo=check_tempo(float_arg(args, 0, "bpm")), tempo_map=None)
        self.reply(sender, "ok", "tempo")

    def _meter(self, sender, *args):
        meter = check_meter(int_arg(args, 0, "numerator"), int_arg(args, 1, "denominator"))
        self.app.host_state.update(SOURCE, meter=meter, tempo_map=None)
        self.reply(sender, "ok", "meter")

    def _key(self, sender, *args):
        from engine.request import is_valid_keyscale
        key = str_arg(args, 0, "key").strip()
        if key and not is_valid_keyscale(key):
            raise OscArgumentError(f"key {key!r} is not like 'A minor' or 'F# major'")
        self.app.host_state.update(SOURCE, key=key or None)
        self.reply(sender, "ok", "key")

    def source_roots(self) -> list[str]:
        """Where /acecomp/source may point: the clip folder, --source-file's folder, $ACE_COMPANION_SOURCE_DIRS."""
        roots = list(self.app.allowed_roots())
        configured = getattr(self.app.config, "source_file", None)
        if configured:
            roots.append(os.path.dirname(os.path.abspath(configured)))
        roots += [d for d in os.environ.get(SOURCE_DIRS_ENV, "").split(os.pathsep) if d.strip()]
        return roots

    def _check_sketch_paths(self, settings: dict[str, Any]) -> None:
        """A .mid file or SoundFont named over OSC must lie where a source may come from (as for
        /acecomp/source); refused before looking, so the answer never says which files exist."""
        from bridge.clips import is_within
        for key in ("midi_path", "soundfont"):
            path = settings.get(key)
            if path is None or (key == "soundfont" and path == "none"):
                continue
            roots = self.source_roots()
            if not isinstance(path, str) or not os.path.isabs(path) or not is_within(path, roots):
                raise OscArgumentError(f"{key} {path} is outside the folders a source may come from "
                                       f"({', '.join(roots)}; add one with ${SOURCE_DIRS_ENV})")

    def _source(self, sender, *args):
        from bridge.clips import is_within

        path = str_arg(args, 0, "path")
        if path:
            roots = self.source_roots()
            # refuse before looking, so the answer never says which files exist elsewhere
            if not os.path.isabs(path) or not is_within(path, roots):
                raise OscArgumentError(f"{path} is outside the folders a source may come from ({', '.join(roots)}; "
                                       f"add one with ${SOURCE_DIRS_ENV})")
            if not os.path.isfile(path):
                raise OscArgumentError(f"source file not found: {path}")
        self.app.host_state.update(SOURCE, source_file=path or None)
        self.reply(sender, "ok", "source")

    def _project(self, sender, *args):
        self.app.host_state.update(SOURCE, project_name=str_arg(args, 0, "name"))
        self.reply(sender, "ok", "project")

    def _samplerate(self, sender, *args):
        rate = int_arg(args, 0, "sample_rate")
        if not 8000 <= rate <= 384000:
            raise OscArgumentError(f"sample rate {rate} is outside 8000-384000 Hz")
        self.app.host_state.update(SOURCE, sample_rate=rate)
        self.reply(sender, "ok", "samplerate")

    def _status(self, sender, *args):
        status = {"adapters": self.app.adapters_status(), "host": self.app.host_state.values()}
        self.reply(sender, "status", json.dumps(status, default=str))

    def _ping(self, sender, *args):
        self.reply(sender, "pong")
