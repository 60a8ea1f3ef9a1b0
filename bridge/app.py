"""The bridge: DAW state in, engine jobs out, bar-exact clips back into the DAW.

`BridgeApp.run_action("repaint")` takes the selected region from HostState, snaps it to bars,
builds the context window around it, gets the source audio (REAPER renders it through the
ReaScript; other hosts use a configured source file), uploads it, submits a
`GenerationRequest` with the host's BPM/meter/key as metas, and returns the job id. A worker
thread then follows the job, cuts the result to the region at the host rate, writes a WAV with
`acid` and `bext` chunks, and inserts it through the DAW adapter (or offers it for
drag-and-drop when no DAW can take it). Progress and results go to `subscribe()` listeners
and to the OSC client that asked.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from bridge import grid
from bridge.adapters import AdapterError, HostAdapter
from bridge.clips import (ENGINE_SAMPLE_RATE, ClipError, ClipMeta, clip_path, cut_result, is_within, read_audio,
                          resample, source_excerpt, take, write_clip, write_context)
from bridge.config import ACTIONS, INSERT_MODES, BridgeConfig
from bridge.grid import GridError, Region, TempoMap
from bridge.host_state import HostState
from bridge.listeners import Listeners
from bridge.wavchunks import WavError, read_wav
from engine.client import EngineClient, EngineHTTPError, EngineUnavailable
from engine.request import TIME_SIGNATURES, TRACK_NAMES, GenerationRequest, RequestError, is_valid_keyscale

log = logging.getLogger(__name__)

# Keys in `overrides` that steer the bridge rather than the request.
BRIDGE_KEYS = {"region", "region_beats", "bars", "stems", "insert", "source_file", "snap", "priority",
               "source_offset_s", "track_name"}  # the last two: sketch -> part (bridge/sketch.py)

Event = dict[str, Any]
Listener = Callable[[Event], None]


class BridgeError(RuntimeError):
    """An action cannot run; the message tells the musician what to fix."""


@dataclass
class ClipPlan:
    """Where one job's result goes: `region` of the project, from audio starting at `window_start_s`."""

    region: Region
    window_start_s: float
    label: str  # task part of the file name
    new_track: bool = False
    track_name: str = ""


@dataclass
class ActionRecord:
    id: str
    action: str
    job_ids: list[str] = field(default_factory=list)
    state: str = "running"  # running, done, failed, cancelled
    clips: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Plan:
    action: str
    requests: list[dict[str, Any]]
    clips: list[ClipPlan]
    tempo_map: TempoMap
    key: str | None
    host_sr: int
    project: str
    source_span: tuple[float, float] | None  # project time of the context audio to send
    source_file: str | None
    insert_mode: str
    priority: str = "interactive"
    source_offset_s: float | None = None  # project time of source_file's first sample (None = config)


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
        self._threads: list[threading.Thread] = []
        self._started = False
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
                web_url=cfg.reaper_web_url)))
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
        mappings = [parse_mapping(text, ACTIONS + ("cancel", "sketch", "jam")) for text in self.config.midi_mappings]
        listener = MidiListener(self.host_state, mappings, on_action=self._midi_action)
        return MidiAdapter(listener, self.config.midi_in, self.config.midi_virtual)

    def _midi_action(self, action: str) -> None:
        if action == "cancel":
            self.cancel()
            return
        if action == "jam":  # start or stop jam (bridge/jam.py)
            from bridge.jam import jam_controller
            threading.Thread(target=self._quietly, args=(jam_controller(self).toggle,), daemon=True).start()
            return
        threading.Thread(target=self._run_quietly, args=(action,), daemon=True).start()

    def _quietly(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
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

    # ================================================================ actions
    def run_action(self, action: str, overrides: dict[str, Any] | None = None,
                   notify: Listener | None = None) -> str:
        """Start `action` (generate, repaint, continue, cover, stems, extract) on the selected
        region; returns the (first) engine job id. Raises BridgeError with a clear message."""
        if action == "sketch":  # MIDI sketch -> part: renders the notes, then runs cover (bridge/sketch.py)
            from bridge.sketch import run_sketch
            return run_sketch(self, overrides, notify)
        started = time.monotonic()
        plan = self._plan(action, dict(overrides or {}))
        source_path = None
        if plan.source_span is not None:
            source_path = self._context_audio(*plan.source_span, plan.source_file, plan.source_offset_s)
        record = ActionRecord(id=uuid.uuid4().hex[:12], action=action)
        try:
            if source_path is not None:
                file_id = self.client.upload(source_path)
                for request in plan.requests:
                    request["src_audio"] = f"file:{file_id}"
            for request in plan.requests:
                record.job_ids.append(self.client.submit(request, priority=plan.priority))
        except EngineUnavailable as exc:
            raise BridgeError(f"the engine is not running: {exc}") from None
        except EngineHTTPError as exc:
            for job_id in record.job_ids:  # stems: do not leave half an action running
                try:
                    self.client.cancel(job_id)
                except (EngineUnavailable, EngineHTTPError):
                    pass
            raise BridgeError(f"the engine refused the job: {exc.message}") from None
        finally:
            if source_path is not None:
                _remove_quietly(source_path)
        record.timings["prepare_s"] = time.monotonic() - started
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

    def wait_action(self, action_id: str, timeout: float = 60.0) -> ActionRecord:
        """Block until an action finished (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.actions.get(action_id)
            if record is not None and record.state != "running":
                return record
            time.sleep(0.02)
        raise TimeoutError(f"action {action_id} still running after {timeout:.0f} s")

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

    # ---------------------------------------------------------------- planning
    def _plan(self, action: str, overrides: dict[str, Any]) -> _Plan:
        if action not in ACTIONS:
            raise BridgeError(f"unknown action '{action}' (one of {', '.join(ACTIONS)})")
        request_over = {k: v for k, v in overrides.items() if k not in BRIDGE_KEYS}
        known = set(GenerationRequest.field_names())
        unknown = sorted(k for k in request_over if k not in known)
        if unknown:
            raise BridgeError(f"unknown setting(s): {', '.join(unknown)}")
        tempo_map = self.host_state.tempo_map()
        if tempo_map is None:
            raise BridgeError("the host tempo is unknown: start the DAW adapter, or send /acecomp/tempo <bpm>")
        try:
            region = self._region(overrides, tempo_map)
            snap = overrides.get("snap", self.config.snap)
            if snap != "off":
                region = grid.snap_region_to_bars(region, tempo_map, snap)
        except GridError as exc:
            raise BridgeError(str(exc)) from None
        host_sr = int(self.host_state.get("sample_rate") or self.config.sample_rate)
        key = self.host_state.get("key")
        key = key if isinstance(key, str) and is_valid_keyscale(key) else None
        project = self.config.project or self.host_state.get("project_name") or "untitled"
        point = tempo_map.point_at_seconds(region.start_s)
        metas: dict[str, Any] = {}
        if grid_bpm_ok(point.bpm):
            metas["bpm"] = int(round(point.bpm))
        if key:
            metas["keyscale"] = key
        signature = timesignature_for(point.num, point.den)
        if signature:
            metas["timesignature"] = signature
        base = {**self.config.request_defaults, **metas, **request_over}
        insert_mode = overrides.get("insert", self.config.insert_mode)
        if insert_mode not in INSERT_MODES:
            raise BridgeError(f"insert mode {insert_mode!r} is not one of {', '.join(INSERT_MODES)}")
        source_file = overrides.get("source_file") or self.host_state.get("source_file") or self.config.source_file

        def window_for(r: Region) -> grid.ContextWindow:
            w = grid.context_window(r, min_window_s=self.config.min_context_s,
                                    max_window_s=self.config.max_context_s, tempo=tempo_map)
            return _on_samples(w, host_sr)

        requests: list[dict[str, Any]] = []
        clips: list[ClipPlan] = []
        span: tuple[float, float] | None = None
        try:
            if action == "generate":
                grid.check_region_length(region, "generate")
                duration = math.ceil(max(region.length_s, self.config.min_context_s) * 10) / 10
                requests.append({**base, "task_type": "text2music", "duration": duration})
                clips.append(ClipPlan(region, region.start_s, "generate"))
            elif action in ("repaint", "cover"):
                grid.check_region_length(region, action)
                w = window_for(region)
                task = {"task_type": action}
                if action == "repaint":
                    task.update(repainting_start=round(w.repaint_start_s, 6), repainting_end=round(w.repaint_end_s, 6))
                requests.append({**base, **task})
                track_name = str(overrides.get("track_name") or "")  # sketch -> part: a new named track
                clips.append(ClipPlan(region, w.start_s, action, new_track=bool(track_name), track_name=track_name))
                span = (w.start_s, w.end_s)
            elif action == "continue":
                bars = overrides.get("bars", self.config.continue_bars)
                first_bar, n_bars = grid.region_bars(region, tempo_map)
                try:
                    n_new = float(bars) if bars is not None else n_bars
                except (TypeError, ValueError):
                    raise BridgeError(f"continuation length {bars!r} bars is not a number") from None
                if not math.isfinite(n_new) or n_new <= 0:
                    raise BridgeError(f"continuation length {bars!r} bars must be a positive number")
                end_bar = tempo_map.seconds_to_bar(region.end_s)
                new_part = Region(region.end_s, tempo_map.bar_to_seconds(end_bar + n_new))
                grid.check_region_length(new_part, "continue")
                w = _on_samples(grid.continuation_window(region, new_part.length_s,
                                                         min_window_s=self.config.min_context_s,
                                                         max_window_s=self.config.max_context_s), host_sr)
                requests.append({**base, "task_type": "repaint", "repainting_start": round(w.repaint_start_s, 6),
                                 "repainting_end": round(w.repaint_end_s, 6)})
                clips.append(ClipPlan(w.region, w.start_s, "continue"))
                span = (w.start_s, w.region.start_s)  # only the existing audio; the engine outpaints the rest
            else:  # stems / extract
                grid.check_region_length(region, action)
                w = window_for(region)
                stems = self._stems(action, overrides, request_over)
                dit = {"dit": self.config.extract_dit} if self.config.extract_dit and not base.get("dit") else {}
                for stem in stems:
                    requests.append({**base, **dit, "task_type": "extract", "track_name": stem})
                    clips.append(ClipPlan(region, w.start_s, f"{action}-{stem}", new_track=True, track_name=stem))
                span = (w.start_s, w.end_s)
        except GridError as exc:
            raise BridgeError(str(exc)) from None
        for request in requests:  # validate now, before any render or upload
            probe = dict(request)
            if span is not None:
                probe["src_audio"] = "file:pending"
            try:
                GenerationRequest.from_dict(probe)
            except RequestError as exc:
                raise BridgeError(f"bad setting: {exc}") from None
        if span is not None and not source_file and self._daw("can_render") is None:
            raise BridgeError(self._no_source_message())
        return _Plan(action, requests, clips, tempo_map, key, host_sr, project, span, source_file, insert_mode,
                     overrides.get("priority", "interactive"), overrides.get("source_offset_s"))

    def _region(self, overrides: dict[str, Any], tempo_map: TempoMap) -> Region:
        if overrides.get("region") is not None:
            start, end = _pair(overrides["region"], "region")
            return Region(start, end)
        if overrides.get("region_beats") is not None:
            start, end = _pair(overrides["region_beats"], "region_beats")
            return Region.from_beats(start, end, tempo_map)
        region = self.host_state.region()
        if region is None:
            raise BridgeError("no region selected: make a time selection (REAPER) or set the loop brace "
                              "(Ableton), or send /acecomp/region <start_s> <end_s>")
        return region

    def _stems(self, action: str, overrides: dict[str, Any], request_over: dict[str, Any]) -> list[str]:
        if action == "extract":
            stems = [request_over.get("track_name") or "vocals"]
        else:
            stems = overrides.get("stems") or list(self.config.stems)
            if isinstance(stems, str):
                stems = [s.strip() for s in stems.split(",") if s.strip()]
        bad = [s for s in stems if s not in TRACK_NAMES]
        if bad:
            raise BridgeError(f"unknown stem(s) {', '.join(map(str, bad))}; choose from {', '.join(TRACK_NAMES)}")
        return list(stems)

    def _no_source_message(self) -> str:
        names = ", ".join(self.adapters) or "none"
        return ("no source audio: no connected DAW can render (adapters: " + names + "). In REAPER run "
                "ace_companion.lua; for Ableton export the song from bar 1 and pass --source-file or send "
                "/acecomp/source <path>")

    # ---------------------------------------------------------------- source audio
    def _context_audio(self, start_s: float, end_s: float, source_file: str | None,
                       source_offset_s: float | None = None) -> str:
        """A 48 kHz WAV of project time [start_s, end_s) for upload."""
        os.makedirs(self.config.work_folder, exist_ok=True)
        out = os.path.join(self.config.work_folder, f"context-{uuid.uuid4().hex[:10]}.wav")
        try:
            if source_file:
                if not os.path.isfile(source_file):
                    raise BridgeError(f"source file not found: {source_file}")
                offset = self.config.source_offset_s if source_offset_s is None else source_offset_s
                audio = source_excerpt(source_file, start_s, end_s, ENGINE_SAMPLE_RATE, offset)
            else:
                audio = self._rendered(start_s, end_s)
        except ClipError as exc:
            raise BridgeError(str(exc)) from None
        return write_context(out, audio)

    def _rendered(self, start_s: float, end_s: float) -> Any:
        adapter = self._daw("can_render")
        if adapter is None:
            raise BridgeError(self._no_source_message())
        dest = os.path.join(self.config.work_folder, f"render-{uuid.uuid4().hex[:10]}.wav")
        try:
            path = adapter.render(start_s, end_s, dest, timeout_s=self.config.render_timeout_s,
                                  source=self.config.render_source)
            audio, sr = read_audio(path)
        except AdapterError as exc:
            raise BridgeError(str(exc)) from None
        finally:
            _remove_quietly(dest)
        expected = grid.span_samples(start_s, end_s, sr)
        if audio.shape[1] < 0.98 * expected:
            raise BridgeError(f"{adapter.name} rendered {audio.shape[1] / sr:.2f} s instead of "
                              f"{(end_s - start_s):.2f} s: the render is incomplete (cancelled or failed?)")
        audio = resample(take(audio, 0, expected), sr, ENGINE_SAMPLE_RATE)
        return take(audio, 0, grid.span_samples(start_s, end_s, ENGINE_SAMPLE_RATE))

    # ---------------------------------------------------------------- following jobs
    def _follow(self, record: ActionRecord, plan: _Plan, notify: Listener | None) -> None:
        failures = []
        for job_id, clip in zip(record.job_ids, plan.clips):
            last: dict[str, Any] = {}

            def on_progress(job: dict[str, Any], job_id=job_id) -> None:
                progress = job.get("progress") or {}
                key = (job.get("state"), progress.get("stage"), progress.get("step"))
                if key == last.get("key"):
                    return
                last["key"] = key
                total = progress.get("total") or 0
                percent = round(100.0 * (progress.get("step") or 0) / total, 1) if total else 0.0
                self._emit({"type": "progress", "action_id": record.id, "job_id": job_id, "state": job.get("state"),
                            "stage": progress.get("stage") or "", "step": progress.get("step") or 0,
                            "total": total, "percent": percent}, notify)
            try:
                job = self.client.wait(job_id, timeout=self.config.job_timeout_s, on_progress=on_progress)
            except (EngineUnavailable, TimeoutError, EngineHTTPError) as exc:
                failures.append(self._fail(record, job_id, f"lost the engine while waiting: {exc}", notify))
                continue
            state = job.get("state")
            if state == "cancelled":
                record.state = "cancelled"
                self._emit({"type": "error", "action_id": record.id, "job_id": job_id, "message": "cancelled"}, notify)
                continue
            if state != "done" or not job.get("results"):
                failures.append(self._fail(record, job_id, job.get("error") or f"job ended {state}", notify))
                continue
            record.timings["engine_s"] = record.timings.get("engine_s", 0.0) + _job_seconds(job)
            try:
                self._deliver(record, plan, clip, job_id, job["results"][0], notify)
            except Exception as exc:  # one bad result must not kill the bridge
                log.exception("delivering job %s failed", job_id)
                failures.append(self._fail(record, job_id, f"could not make the clip: {exc}", notify))
        if record.state == "running":
            record.state = "failed" if failures and not record.clips else "done"
            if failures:
                record.error = "; ".join(failures)
        record.finished_at = time.time()
        self._emit({"type": "done", "action_id": record.id, "action": record.action, "state": record.state,
                    "clips": [c["path"] for c in record.clips], "error": record.error}, notify)

    def _fail(self, record: ActionRecord, job_id: str, message: str, notify: Listener | None) -> str:
        log.warning("%s job %s: %s", record.action, job_id, message)
        self._emit({"type": "error", "action_id": record.id, "job_id": job_id, "message": message}, notify)
        return message

    def _deliver(self, record: ActionRecord, plan: _Plan, clip: ClipPlan, job_id: str, result: dict[str, Any],
                 notify: Listener | None) -> None:
        work = os.path.join(self.config.work_folder, f"result-{job_id}-{result.get('index', 0)}.wav")
        self.client.download(result.get("url") or result["file_id"], work)
        try:
            audio, sr = read_audio(work)
        finally:
            _remove_quietly(work)
        host_audio = cut_result(audio, sr, clip.window_start_s, clip.region, plan.host_sr, self.config.fade_ms)
        first_bar = int(round(plan.tempo_map.seconds_to_bar(clip.region.start_s))) + 1
        seed = result.get("seed")
        path = clip_path(self.config.output_dir, plan.project, clip.label, first_bar, seed)
        write_clip(path, host_audio, ClipMeta(clip.region, plan.tempo_map, plan.host_sr, plan.key, clip.label, seed,
                                              plan.project), self.config.sample_format)
        inserted, adapter_name, message = self._insert(path, clip, plan.insert_mode)
        info = {"path": path, "job_id": job_id, "position_s": clip.region.start_s, "bar": first_bar,
                "length_samples": int(host_audio.shape[1]), "sample_rate": plan.host_sr, "seed": seed,
                "inserted": inserted, "adapter": adapter_name, "message": message, "track_name": clip.track_name}
        record.clips.append(info)
        self._emit({"type": "result", "action_id": record.id, **info}, notify)

    def _insert(self, path: str, clip: ClipPlan, mode: str) -> tuple[bool, str | None, str]:
        if mode == "none":
            return False, None, "insertion is off: drag the clip from the window"
        adapter = self._daw("can_insert")
        if adapter is None:
            return False, None, "no DAW connected that can insert: drag the clip from the window"
        new_track = clip.new_track or mode == "new_track"
        try:
            adapter.insert(path, clip.region.start_s, track=None, new_track=new_track,
                           track_name=clip.track_name or clip.label, replace=(mode == "replace" and not new_track),
                           length_s=clip.region.length_s, timeout_s=self.config.insert_timeout_s)
        except AdapterError as exc:
            log.warning("insert through %s failed: %s", adapter.name, exc)
            return False, adapter.name, f"{exc}; drag the clip from the window instead"
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
        length_s = max(wav.frames / wav.sample_rate, 1e-3)
        clip = ClipPlan(Region(position_s, position_s + length_s), position_s, "insert",
                        new_track=new_track, track_name=track_name)
        inserted, _, message = self._insert(path, clip, "new_track" if new_track else "add")
        if not inserted:
            self._emit({"type": "offer", "path": path, "message": message})
        return inserted


# ---------------------------------------------------------------- helpers
def grid_bpm_ok(bpm: float) -> bool:
    return 30 <= round(bpm) <= 300


def timesignature_for(num: int, den: int) -> str:
    """The engine's time-signature meta ('2','3','4','6'); '' when the meter has none (5/4, 7/8...)."""
    if den == 4 and str(num) in TIME_SIGNATURES:
        return str(num)
    if (num, den) in ((6, 8), (12, 8)):
        return "6" if num == 6 else "4"
    return ""


def _on_samples(window: grid.ContextWindow, sample_rate: int) -> grid.ContextWindow:
    """Move the window edges onto host samples, so cuts later are whole samples."""
    start = round(window.start_s * sample_rate) / sample_rate
    end = round(window.end_s * sample_rate) / sample_rate
    region = window.region
    return grid.ContextWindow(start, end, region, region.start_s - start, region.end_s - start)


def _pair(value: Any, name: str) -> tuple[float, float]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            pass
    raise GridError(f"{name} must be two numbers [start, end], got {value!r}")


def _job_seconds(job: dict[str, Any]) -> float:
    try:
        return float(job["finished_at"]) - float(job["started_at"])
    except (KeyError, TypeError, ValueError):
        return 0.0


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
