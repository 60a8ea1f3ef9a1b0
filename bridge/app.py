"""The bridge: DAW state in, engine jobs out, bar-exact clips back into the DAW.

`BridgeApp.run_action("repaint")` reads the host (selection, tempo map, key, rate) into a
`HostView`, lets the pure planner (bridge/actions.py) turn the action into engine requests,
gets the source audio (bridge/sources.py: REAPER renders it through the ReaScript; other hosts
use a configured source file), submits the jobs and returns the first job id. A worker thread
(bridge/jobs.py) follows the jobs and makes the clips; this module places them in the DAW (or
offers them for drag-and-drop when no DAW can take them). Progress and results go to
`subscribe()` listeners and to the OSC client that asked.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bridge.actions import ACTION_NAMES, ActionPlan, ClipPlan, HostView, plan_action
from bridge.adapters import AdapterError, HostAdapter
from bridge.clips import is_within
from bridge.config import BridgeConfig
from bridge.errors import BridgeError
from bridge.grid import Region
from bridge.host_state import HostState
from bridge.jobs import ActionRecord, JobFollower
from bridge.listeners import Listeners
from bridge.sources import SourceFetcher
from bridge.wavchunks import WavError, read_wav
from engine.client import EngineClient, EngineHTTPError, EngineUnavailable

log = logging.getLogger(__name__)

__all__ = ["ActionRecord", "BridgeApp", "BridgeError"]

Event = dict[str, Any]
Listener = Callable[[Event], None]


class BridgeApp:
    def __init__(self, config: BridgeConfig | None = None, engine_client: Any = None,
                 host_state: HostState | None = None, adapters: dict[str, Any] | None = None):
        self.config = config or BridgeConfig()
        self.config.validate()
        self.client = engine_client or EngineClient(self.config.engine_url, self.config.token)
        self.host_state = host_state or HostState()
        self.adapters: dict[str, Any] = dict(adapters or {})
        self._adapters_given = adapters is not None
        self.adapter_errors: dict[str, str] = {}
        self.commands = None
        self.actions: dict[str, ActionRecord] = {}
        self._job_actions: dict[str, str] = {}
        self._listeners = Listeners("bridge event")
        self._lock = threading.RLock()
        self._finished = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._started = False
        self.sources = SourceFetcher(self.client, self.config, lambda: self._daw("can_render"),
                                     lambda: tuple(self.adapters))
        self.jobs = JobFollower(self.client, self.config, self._emit, self._insert)
        if self.config.project:
            self.host_state.update("config", project_name=self.config.project)
        if self.config.source_file:
            self.host_state.update("config", source_file=self.config.source_file)

    # ================================================================ lifecycle
    def start(self) -> None:
        """Open the DAW adapters and the OSC command port. A part that fails to open (port in
        use, no MIDI backend) is logged and reported in `adapters_status()`; the rest runs."""
        os.makedirs(self.config.output_dir, exist_ok=True)
        os.makedirs(self.config.work_folder, exist_ok=True)
        if not self._adapters_given:
            self._create_adapters()
        for name, adapter in list(self.adapters.items()):
            try:
                adapter.start()
            except Exception as exc:
                self.adapter_errors[name] = str(exc)
                log.error("%s adapter did not start: %s", name, exc)
                self.adapters.pop(name)
        from bridge.commands import CommandServer
        self.commands = CommandServer(self, self.config.osc_host, self.config.osc_port, self.config.reply_port)
        self.commands.start()
        self._started = True

    def _create_adapters(self) -> None:
        cfg, host = self.config, self.config.host
        makers: list[tuple[str, Callable[[], Any]]] = []
        if host in ("auto", "reaper"):
            from bridge.reaper.adapter import ReaperAdapter
            makers.append(("reaper", lambda: ReaperAdapter(
                self.host_state, listen_host=cfg.osc_host, listen_port=cfg.reaper_listen_port,
                reaper_host=cfg.reaper_host, reaper_port=cfg.reaper_port, mailbox=cfg.reaper_mailbox,
                web_url=cfg.reaper_web_url, wake_action=cfg.reaper_wake_action)))
        if host in ("auto", "ableton"):
            from bridge.ableton.adapter import AbletonAdapter
            makers.append(("ableton", lambda: AbletonAdapter(
                self.host_state, live_host=cfg.live_host, send_port=cfg.ableton_port, listen_host=cfg.osc_host,
                listen_port=cfg.ableton_listen_port, insert_port=cfg.ableton_insert_port)))
        if host == "midi" or cfg.midi_in or cfg.midi_virtual:
            makers.append(("midi", self._make_midi))
        for name, make in makers:
            try:
                self.adapters[name] = make()
            except Exception as exc:  # e.g. the UDP port is taken by another program
                self.adapter_errors[name] = str(exc)
                log.error("%s adapter unavailable: %s", name, exc)

    def _make_midi(self):
        from bridge.midi import MidiAdapter, MidiListener, parse_mapping
        actions = ACTION_NAMES + ("cancel", "sketch", "jam")  # sketch: bridge/sketch.py, jam: bridge/jam.py
        mappings = [parse_mapping(text, actions) for text in self.config.midi_mappings]
        listener = MidiListener(self.host_state, mappings, on_action=self._midi_action)
        return MidiAdapter(listener, self.config.midi_in, self.config.midi_virtual)

    def _midi_action(self, action: str) -> None:
        if action == "cancel":
            self.cancel()
            return
        if action == "jam":
            threading.Thread(target=self._toggle_jam, daemon=True).start()
            return
        threading.Thread(target=self._run_quietly, args=(action,), daemon=True).start()

    def _toggle_jam(self) -> None:
        """Start or stop jam (bridge/jam.py), from a MIDI trigger."""
        from bridge.jam import jam_controller
        try:
            jam_controller(self).toggle()
        except Exception as exc:
            self._emit({"type": "error", "action": "jam", "action_id": None, "job_id": None, "message": str(exc)})

    def _run_quietly(self, action: str) -> None:
        try:
            self.run_action(action)
        except Exception as exc:
            self._emit({"type": "error", "action": action, "action_id": None, "job_id": None, "message": str(exc)})

    def stop(self) -> None:
        if getattr(self, "jam", None) is not None:  # bridge/jam.py: cancel its job, end its thread
            self.jam.stop("the bridge stopped")
        if self.commands is not None:
            self.commands.stop()
            self.commands = None
        for adapter in self.adapters.values():
            try:
                adapter.stop()
            except Exception:
                log.exception("stopping an adapter failed")
        for thread in list(self._threads):
            thread.join(timeout=1)
        self.sources.forget()  # the local copies of uploaded sources
        self._started = False

    # ================================================================ status and events
    def adapters_status(self) -> dict[str, dict[str, Any]]:
        status = {name: adapter.status() for name, adapter in self.adapters.items()}
        for name, error in self.adapter_errors.items():
            status[name] = {"connected": False, "last_seen": None, "error": error}
        return status

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Bridge events: dicts with "type" job|progress|result|error|done|offer (see README).
        Returns a function that unsubscribes."""
        return self._listeners.add(callback)

    def _emit(self, event: Event, notify: Listener | None = None) -> None:
        self._listeners.call(event, notify)

    # ================================================================ DAW choice
    def _daw(self, capability: str) -> HostAdapter | None:
        """The connected DAW adapter with `capability` (can_render / can_insert) heard from last."""
        candidates = [a for a in self.adapters.values()
                      if getattr(a, capability, False) and a.status().get("connected")]
        candidates.sort(key=lambda a: a.status().get("last_seen") or 0, reverse=True)
        return candidates[0] if candidates else None

    def host_view(self) -> HostView:
        """The host as the planner sees it, read once."""
        state = self.host_state
        return HostView(tempo_map=state.tempo_map(), region=state.region(), sample_rate=state.get("sample_rate"),
                        key=state.get("key"), project_name=state.get("project_name"),
                        source_file=state.get("source_file"), can_render=self._daw("can_render") is not None,
                        adapters=tuple(self.adapters))

    # ================================================================ actions
    def plan(self, action: str, overrides: dict[str, Any] | None = None) -> ActionPlan:
        return plan_action(action, overrides, self.host_view(), self.config)

    def run_action(self, action: str, overrides: dict[str, Any] | None = None,
                   notify: Listener | None = None) -> str:
        """Start `action` (generate, repaint, continue, cover, stems, extract) on the selected
        region; returns the (first) engine job id. Raises BridgeError with a clear message."""
        if action == "sketch":  # MIDI sketch -> part: renders the notes, then runs cover (bridge/sketch.py)
            from bridge.sketch import run_sketch
            return run_sketch(self, overrides, notify)
        clock = time.perf_counter()
        plan = self.plan(action, overrides)
        record = ActionRecord(id=uuid.uuid4().hex[:12], action=action)
        record.timings["plan_s"] = time.perf_counter() - clock
        try:
            file_id = self.sources.file_id(plan, record.timings)
            clock = time.perf_counter()
            for request in plan.requests:
                job_id, file_id = self._submit(request, file_id, plan.priority)
                record.job_ids.append(job_id)
            record.timings["submit_s"] = time.perf_counter() - clock
        except EngineUnavailable as exc:
            raise BridgeError(f"the engine is not running: {exc}") from None
        except EngineHTTPError as exc:
            for job_id in record.job_ids:  # stems: do not leave half an action running
                try:
                    self.client.cancel(job_id)
                except (EngineUnavailable, EngineHTTPError):
                    pass
            raise BridgeError(f"the engine refused the job: {exc.message}") from None
        with self._lock:
            self.actions[record.id] = record
            for job_id in record.job_ids:
                self._job_actions[job_id] = record.id
        self._emit({"type": "job", "action": action, "action_id": record.id, "job_id": record.job_ids[0],
                    "job_ids": list(record.job_ids)}, notify)
        thread = threading.Thread(target=self._follow, args=(record, plan, notify), name=f"bridge-{action}",
                                  daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return record.job_ids[0]

    def _submit(self, request: dict[str, Any], file_id: str | None, priority: str) -> tuple[str, str | None]:
        """Submit one request with the source `file:<id>`; when the engine has dropped that upload
        (uploads expire), send the bridge's copy again once. Returns (job id, file id)."""
        if file_id is not None:
            request["src_audio"] = f"file:{file_id}"
        try:
            return self.client.submit(request, priority=priority), file_id
        except EngineHTTPError as exc:
            if file_id is None or "unknown file id" not in exc.message:
                raise
            file_id = self.sources.upload_again(file_id)
            if file_id is None:
                raise
            request["src_audio"] = f"file:{file_id}"
            return self.client.submit(request, priority=priority), file_id

    def _follow(self, record: ActionRecord, plan: ActionPlan, notify: Listener | None) -> None:
        try:
            self.jobs.follow(record, plan, notify)
        finally:
            with self._finished:
                self._finished.notify_all()

    def wait_action(self, action_id: str, timeout: float = 60.0) -> ActionRecord:
        """Block until an action finished (for scripts and tests)."""
        with self._finished:
            done = self._finished.wait_for(
                lambda: (r := self.actions.get(action_id)) is not None and r.state != "running"
                and r.finished_at is not None, timeout)
        if not done:
            raise TimeoutError(f"action {action_id} still running after {timeout:.0f} s")
        return self.actions[action_id]

    def action_for_job(self, job_id: str) -> ActionRecord | None:
        with self._lock:
            action_id = self._job_actions.get(job_id)
            return self.actions.get(action_id) if action_id else None

    def cancel(self, job_id: str | None = None) -> list[str]:
        """Cancel one job, or every unfinished job of the latest running action. Returns the ids."""
        with self._lock:
            if job_id:
                ids = [job_id]
            else:
                running = [r for r in self.actions.values() if r.state == "running"]
                ids = list(running[-1].job_ids) if running else []
        cancelled = []
        for jid in ids:
            try:
                self.client.cancel(jid)
                cancelled.append(jid)
            except EngineHTTPError as exc:
                if exc.status != 409:  # already finished
                    raise BridgeError(f"cannot cancel job {jid}: {exc.message}") from None
            except EngineUnavailable as exc:
                raise BridgeError(f"cannot cancel job {jid}: the engine is not running ({exc})") from None
        return cancelled

    # ================================================================ delivery
    def _insert(self, path: str, clip: ClipPlan, mode: str, group: str = "") -> tuple[bool, str | None, str]:
        if mode == "none":
            return False, None, "insertion is off: drag the clip into the DAW from the clip folder"
        adapter = self._daw("can_insert")
        if adapter is None:
            return False, None, "no DAW connected that can insert: drag the clip into the DAW from the clip folder"
        new_track = clip.new_track or mode == "new_track"
        try:
            adapter.insert(path, clip.region.start_s, track=None, new_track=new_track,
                           track_name=clip.track_name or clip.label, replace=(mode == "replace" and not new_track),
                           length_s=clip.region.length_s, group=group, timeout_s=self.config.insert_timeout_s)
        except AdapterError as exc:
            log.warning("insert through %s failed: %s", adapter.name, exc)
            return False, adapter.name, f"{exc}; drag the clip into the DAW from the clip folder instead"
        return True, adapter.name, "inserted"

    # ================================================================ manual insertion
    def allowed_roots(self) -> list[str]:
        return [self.config.output_dir]

    def insert_result(self, path: str, position_s: float | None = None, new_track: bool = False,
                      track_name: str = "") -> bool:
        """Insert a clip file (from the output folder) into the DAW. The position defaults to the
        file's `bext` time reference. Returns False when no DAW could take it (drag it instead)."""
        if not is_within(path, self.allowed_roots()):
            raise BridgeError(f"{path} is outside the clip folder {self.config.output_dir}; refusing to insert it")
        if not os.path.isfile(path):
            raise BridgeError(f"clip file not found: {path}")
        try:
            wav = read_wav(path)
        except WavError as exc:
            raise BridgeError(f"cannot read {path}: {exc}") from None
        if position_s is None:
            if wav.bext is None:
                raise BridgeError(f"{path} has no bext time reference; give a position")
            position_s = wav.bext.time_reference / wav.sample_rate
        if not isinstance(position_s, (int, float)) or not math.isfinite(position_s) or position_s < 0:
            raise BridgeError(f"position {position_s} s must be a non-negative number")
        length_s = max(wav.length_samples / wav.sample_rate, 1e-3)
        clip = ClipPlan(Region(position_s, position_s + length_s), position_s, "insert",
                        new_track=new_track, track_name=track_name)
        inserted, _, message = self._insert(path, clip, "new_track" if new_track else "add")
        if not inserted:
            self._emit({"type": "offer", "path": path, "message": message})
        return inserted
