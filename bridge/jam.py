"""Jam: keep the next bars generated ahead of the playhead, bar-synced, while the musician steers.

Chunk k covers bars [b + kN, b + (k+1)N) of the host grid (N = `bars`), where b is the next bar
line after the playhead (or the selection's end when the transport is stopped). Each chunk
continues the audio before it: the DAW mix before bar b (rendered once at the start) plus the
chunks already placed. A chunk is inserted on one track ("ACE Jam") as soon as it is done, at
its exact position, while at most `lookahead` chunks wait ahead of the playhead.

Rules the loop keeps:
* the tempo map and meter are read again for every chunk, so a tempo change between chunks is
  followed;
* a caption sent with `prompt()` applies from the next chunk that has not started;
* no clip lands behind the playhead and no two chunks overlap: when generation falls behind,
  the late chunk is not inserted and jam skips to the next bar it can still reach, and says so;
* stop (or the transport stopping) cancels the job in flight; an insert is never begun after
  stop, so nothing is left half-inserted.

How a chunk gets its context is one function, `continuation_request`: continue the engine's
previous take by its id where the engine keeps takes, else upload the mix plus previous chunks
and outpaint past their end.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge import grid
from bridge.actions import check_region_length, engine_takes_region_pcm, host_metas
from bridge.clips import (
    ENGINE_SAMPLE_RATE,
    ClipError,
    ClipMeta,
    apply_edge_fades,
    clip_path,
    cut_result,
    read_audio,
    resample,
    source_excerpt,
    take,
    write_clip,
    write_context,
)
from bridge.grid import GridError, Region, TempoMap
from bridge.jobs import region_pcm

log = logging.getLogger(__name__)

JAM_TRACK = "ACE Jam"
DEFAULT_BARS = 4
DEFAULT_LOOKAHEAD = 2
DEFAULT_CONTEXT_S = 30.0  # audio before a chunk the model hears (longer = slower)
MARGIN_S = 0.25  # a chunk must be placed at least this long before the playhead reaches it
MIN_CONTEXT_AUDIO_S = 3.0  # less audio than this before a chunk: generate it from the caption alone

Event = dict[str, Any]


class JamError(RuntimeError):
    """Jam cannot start or go on; the message says why."""


@dataclass
class Chunk:
    index: int
    first_bar: int  # 0-based bar of the host grid
    bars: int
    start_s: float
    end_s: float
    state: str = "queued"  # queued, generating, placed, late, failed, cancelled
    job_id: str | None = None
    path: str | None = None
    inserted: bool = False
    playhead_at_insert_s: float | None = None  # where the playhead was when the clip went in
    generate_s: float = 0.0  # wall time from submit to clip written
    caption: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "bar": self.first_bar + 1, "bars": self.bars, "start_s": self.start_s,
                "end_s": self.end_s, "state": self.state, "path": self.path, "inserted": self.inserted,
                "playhead_at_insert_s": self.playhead_at_insert_s, "generate_s": self.generate_s}


@dataclass
class JamContext:
    """What a chunk continues from: the audio at 48 kHz (the mix before the first bar, then the
    chunks), and, where the engine keeps whole takes, the last take to continue without re-upload."""

    audio: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), dtype=np.float32))
    max_s: float = DEFAULT_CONTEXT_S
    take_file_id: str | None = None  # the engine's whole take of the last chunk (its `take_file_id`)
    take_s: float = 0.0  # that take's length: where the next chunk starts on its timeline

    def add(self, audio: np.ndarray) -> None:
        keep = int(self.max_s * ENGINE_SAMPLE_RATE)
        self.audio = np.concatenate([self.audio, audio.astype(np.float32)], axis=1)[:, -keep:]

    @property
    def seconds(self) -> float:
        return self.audio.shape[1] / ENGINE_SAMPLE_RATE


@dataclass
class ChunkRequest:
    request: dict[str, Any]
    upload_path: str | None  # context audio to upload as src_audio (None: no upload)
    offset_s: float  # where the new chunk starts on the result's timeline (when the result is whole)


def continuation_request(base: dict[str, Any], context: JamContext, chunk_s: float, work_dir: str,
                         host_sample_rate: int = ENGINE_SAMPLE_RATE, min_duration_s: float = 10.0) -> ChunkRequest:
    """The engine request for a chunk of `chunk_s` seconds after `context`. The one place that
    decides how chunks chain:

    * the engine keeps whole takes (`output_region` in its schema, `take_file_id` in results):
      continue the last take by its id, and get back only the new chunk at the host rate; nothing
      is re-uploaded, re-encoded or re-decoded. When the take has grown past twice `max_s`, one
      chunk goes the ordinary way to start a short take again (the model's cost grows with it);
    * ordinary continuation: upload the last `max_s` seconds of context and outpaint past its end;
    * under 3 s of context: generate the chunk from the caption alone.
    """
    region_pcm = engine_takes_region_pcm()
    out = {}
    if context.take_file_id and region_pcm and context.take_s + chunk_s <= 2 * context.max_s:
        start_s = round(context.take_s, 6)
        span = [start_s, round(start_s + chunk_s, 6)]
        request = {**base, "task_type": "repaint", "src_audio": f"file:{context.take_file_id}",
                   "repainting_start": span[0], "repainting_end": span[1], "output_region": span,
                   "output_sample_rate": int(host_sample_rate)}
        return ChunkRequest(request, None, start_s)
    frames = context.audio.shape[1]
    if frames < int(MIN_CONTEXT_AUDIO_S * ENGINE_SAMPLE_RATE):
        duration = math.ceil(max(chunk_s, min_duration_s) * 10) / 10
        if region_pcm:
            out = {"output_region": [0.0, round(chunk_s, 6)], "output_sample_rate": int(host_sample_rate)}
        return ChunkRequest({**base, "task_type": "text2music", "duration": duration, **out}, None, 0.0)
    start_s = frames / ENGINE_SAMPLE_RATE
    span = [round(start_s, 6), round(start_s + chunk_s, 6)]
    if region_pcm:
        out = {"output_region": span, "output_sample_rate": int(host_sample_rate)}
    path = write_context(os.path.join(work_dir, f"jam-context-{uuid.uuid4().hex[:10]}.wav"), context.audio)
    request = {**base, "task_type": "repaint", "repainting_start": span[0], "repainting_end": span[1], **out}
    return ChunkRequest(request, path, start_s)


class JamSession:
    """One jam, from start to stop, on its own thread. Use through `JamController`."""

    def __init__(self, app: Any, settings: dict[str, Any] | None = None,
                 notify: Callable[[Event], None] | None = None, clock: Callable[[], float] = time.time):
        settings = dict(settings or {})
        self.app = app
        self.notify = notify
        self.clock = clock
        self.bars = _positive_int(settings.pop("bars", DEFAULT_BARS), "bars")
        self.lookahead = _positive_int(settings.pop("lookahead", DEFAULT_LOOKAHEAD), "lookahead")
        self.track = str(settings.pop("track", JAM_TRACK) or JAM_TRACK)
        self.render_mix = str(settings.pop("mix", True)).strip().lower() not in ("0", "false", "no", "off")
        self.insert_mode = settings.pop("insert", "new_track")
        if self.insert_mode not in ("new_track", "none"):
            raise JamError(f"insert {self.insert_mode!r} must be new_track (the jam track) or none")
        context_s = settings.pop("context_s", DEFAULT_CONTEXT_S)
        try:
            context_s = float(context_s)
        except (TypeError, ValueError):
            raise JamError(f"context_s {context_s!r} must be a number of seconds") from None
        if not 3.0 <= context_s <= grid.DEFAULT_MAX_CONTEXT_S:
            raise JamError(f"context_s {context_s:g} must be 3-{grid.DEFAULT_MAX_CONTEXT_S:g} s")
        self.context = JamContext(max_s=context_s)
        self.caption = str(settings.pop("caption", "") or app.config.request_defaults.get("caption", ""))
        from engine.request import GenerationRequest
        known = set(GenerationRequest.field_names())
        unknown = sorted(k for k in settings if k not in known)
        if unknown:
            raise JamError(f"unknown jam setting(s): {', '.join(unknown)}")
        self.request_settings = settings
        self.chunks: list[Chunk] = []
        self.state = "stopped"
        self.message = ""
        self.next_bar: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.RLock()
        self._job_id: str | None = None
        self._thread: threading.Thread | None = None
        self._was_playing = False
        self._ready = False  # set after the mix is in: a DAW may pause playback while it renders
        self._queued_index: int | None = None  # the next chunk, announced as queued while jam waits
        self._next_take: tuple[str, float] | None = None  # the last result's take, until it is placed
        self._unsubscribe: Callable[[], None] | None = None
        self.tempo_map = app.host_state.tempo_map()
        if self.tempo_map is None:
            raise JamError("the host tempo is unknown: start the DAW adapter, or send /acecomp/tempo <bpm>")

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        self.state = "running"
        self._was_playing = bool(self.app.host_state.get("playing"))
        self._unsubscribe = self.app.host_state.subscribe(self._on_host_change)
        self._thread = threading.Thread(target=self._run, name="bridge-jam", daemon=True)
        self._thread.start()

    def stop(self, message: str = "stopped", wait_s: float = 30.0) -> None:
        """End the jam: no new chunk starts, the job in flight is cancelled, the thread ends."""
        self._stop.set()
        self._wake.set()
        self._cancel_job()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait_s)
        self._finish(message)

    def _on_host_change(self, changed: dict[str, Any]) -> None:
        """Wake the loop; when the transport stops after playing, end the jam (and its job) now."""
        self._wake.set()
        playing = changed.get("playing")
        if playing is None:
            return
        if playing["value"]:
            self._was_playing = True
        elif self._was_playing and self._ready and self.running and not self._stop.is_set():
            threading.Thread(target=self.stop, args=("transport stopped",), name="jam-stop", daemon=True).start()

    def set_caption(self, caption: str) -> None:
        """Steer: applies from the next chunk that has not started."""
        with self._lock:
            self.caption = caption

    @property
    def running(self) -> bool:
        return self.state == "running"

    # ------------------------------------------------------------------ time
    def playhead_s(self) -> float | None:
        """The play position now: the last reported position, moved on by the clock while playing."""
        entry = self.app.host_state.field("position_s")
        if entry is None:
            return None
        position = float(entry.value)
        if self.app.host_state.get("playing"):
            position += max(0.0, self.clock() - entry.updated_at)
        return position

    def _estimate_s(self) -> float:
        """How long the next chunk will take: the slowest of the last three (0 before the first)."""
        done = [c.generate_s for c in self.chunks if c.state in ("placed", "late")][-3:]
        return max(done) if done else 0.0

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        try:
            self._begin()
            self._was_playing = bool(self.app.host_state.get("playing"))
            self._ready = True
            while not self._stop.is_set():
                playing = bool(self.app.host_state.get("playing"))
                if playing:
                    self._was_playing = True
                elif self._was_playing:
                    self._finish("transport stopped")
                    return
                playhead = self.playhead_s() if playing else None
                ahead = [c for c in self.chunks if c.state == "placed"
                         and (playhead is None or c.start_s > playhead)]
                if len(ahead) >= self.lookahead:
                    self._announce_queued()
                    self._wake.wait(0.05)
                    self._wake.clear()
                    continue
                self._make_chunk()
        except JamError as exc:
            self._finish(str(exc))
        except Exception as exc:  # the bridge stays up; jam says why it ended
            log.exception("jam failed")
            self._finish(f"jam failed: {exc}")
        finally:
            if self._stop.is_set():
                self._cancel_job()

    def _begin(self) -> None:
        host = self.app.host_state
        tempo_map = self.tempo_map
        if host.get("playing") and host.get("position_s") is not None:
            playhead = self.playhead_s() or 0.0
            self.next_bar = math.floor(tempo_map.seconds_to_bar(playhead) + 1e-9) + 1
        else:
            region = host.region()
            anchor = region.end_s if region is not None else float(host.get("position_s") or 0.0)
            self.next_bar = max(0, round(tempo_map.seconds_to_bar(anchor)))
        start_s = tempo_map.bar_to_seconds(self.next_bar)
        self._emit({"type": "jam_state", "state": "running",
                    "message": f"jam from bar {self.next_bar + 1}, {self.bars} bars a chunk"})
        if self.render_mix and start_s > 0:
            mix = self._mix_before(max(0.0, start_s - self.context.max_s), start_s)
            if mix is not None:
                self.context.add(mix)

    def _mix_before(self, start_s: float, end_s: float) -> np.ndarray | None:
        """The DAW mix (or the source file) before the first chunk, at 48 kHz; None when neither exists."""
        app = self.app
        source_file = app.host_state.get("source_file") or app.config.source_file
        try:
            if source_file and os.path.isfile(source_file):
                return source_excerpt(source_file, start_s, end_s, ENGINE_SAMPLE_RATE, app.config.source_offset_s)
            renderers = [a for a in app.adapters.values() if getattr(a, "can_render", False)
                         and a.status().get("connected")]
            if not renderers:
                return None
            dest = os.path.join(app.config.work_folder, f"jam-mix-{uuid.uuid4().hex[:10]}.wav")
            os.makedirs(app.config.work_folder, exist_ok=True)
            try:
                path = renderers[0].render(start_s, end_s, dest, timeout_s=app.config.render_timeout_s,
                                           source=app.config.render_source)
                audio, sr = read_audio(path)
            finally:
                _remove_quietly(dest)
        except Exception as exc:  # jam still runs: the first chunk starts from nothing
            self._emit({"type": "jam_state", "state": "running", "message": f"no mix before the jam ({exc})"})
            return None
        audio = resample(audio, sr, ENGINE_SAMPLE_RATE)
        return take(audio, 0, grid.span_samples(start_s, end_s, ENGINE_SAMPLE_RATE))

    def _reachable_bar(self, tempo_map: TempoMap, bar: int) -> int:
        """`bar`, or the first later bar the next chunk can still be placed before (the playhead
        moves on while it is generated)."""
        if not self.app.host_state.get("playing"):
            return bar
        playhead = self.playhead_s()
        if playhead is None:
            return bar
        need_s = playhead + self._estimate_s() + MARGIN_S
        if tempo_map.bar_to_seconds(bar) >= need_s:
            return bar
        return max(bar + 1, math.ceil(tempo_map.seconds_to_bar(need_s) - 1e-9))

    def _make_chunk(self) -> None:
        app = self.app
        tempo_map = app.host_state.tempo_map() or self.tempo_map
        self.tempo_map = tempo_map
        bar = self._reachable_bar(tempo_map, self.next_bar)
        if bar != self.next_bar:
            self._skip(tempo_map, self.next_bar, bar)
        region = Region(tempo_map.bar_to_seconds(bar), tempo_map.bar_to_seconds(bar + self.bars))
        try:
            check_region_length(region, "continue")
        except GridError as exc:
            raise JamError(f"a {self.bars}-bar chunk does not fit: {exc}") from None
        with self._lock:
            caption = self.caption
        chunk = Chunk(len(self.chunks), bar, self.bars, region.start_s, region.end_s, "generating", caption=caption)
        self.chunks.append(chunk)
        self._emit_chunk_state(chunk)
        started = time.monotonic()
        result = self._generate(chunk, region, tempo_map, caption)
        if result is None:  # stopped
            chunk.state = "cancelled"
            self._emit_chunk_state(chunk)
            return
        host_audio, new_audio, seed, _ = result
        host_sr = self._host_sr()
        project = app.config.project or app.host_state.get("project_name") or "untitled"
        key = _key(app.host_state.get("key"))
        chunk.path = clip_path(app.config.output_dir, project, "jam", bar + 1, seed)
        write_clip(chunk.path, host_audio, ClipMeta(region, tempo_map, host_sr, key, "jam", seed, project),
                   app.config.sample_format)
        chunk.generate_s = time.monotonic() - started
        if self._stop.is_set():
            chunk.state = "cancelled"
            self._emit_chunk_state(chunk)
            return
        playhead = self.playhead_s() if app.host_state.get("playing") else None
        if playhead is not None and playhead + MARGIN_S / 2 > region.start_s:
            chunk.state = "late"  # the playhead got there first: never insert behind it
            self._emit_chunk(chunk)
            next_bar = self._reachable_bar(tempo_map, bar + 1)
            self._skip(tempo_map, bar, next_bar)
            self.next_bar = next_bar
            return
        chunk.inserted = self._insert(chunk)
        chunk.playhead_at_insert_s = playhead
        chunk.state = "placed"
        self.context.add(new_audio)
        # the engine's whole take continues from here, if it kept one (a late chunk is not continued)
        self.context.take_file_id, self.context.take_s = self._next_take or (None, 0.0)
        self.next_bar = bar + self.bars
        self._emit_chunk(chunk)

    def _generate(self, chunk: Chunk, region: Region, tempo_map: TempoMap, caption: str):
        """Submit the chunk and wait for it. Returns (host audio, 48 kHz new audio, seed, result) or
        None when jam was stopped meanwhile."""
        from engine.client import EngineHTTPError, EngineUnavailable
        app = self.app
        base = {**app.config.request_defaults, **self.request_settings, **_metas(app, tempo_map, region.start_s)}
        if caption:
            base["caption"] = caption
        os.makedirs(app.config.work_folder, exist_ok=True)
        chunk_request = continuation_request(base, self.context, region.length_s, app.config.work_folder,
                                             self._host_sr())
        request, upload_path = chunk_request.request, chunk_request.upload_path
        try:
            if upload_path is not None:
                request["src_audio"] = f"file:{app.client.upload(upload_path)}"
            if self._stop.is_set():
                return None
            with self._lock:
                self._job_id = chunk.job_id = app.client.submit(request, priority="interactive")
            if self._stop.is_set():  # stop raced the submit: cancel what we just queued
                self._cancel_job()
                return None
            job = app.client.wait(chunk.job_id, timeout=app.config.job_timeout_s)
        except (EngineUnavailable, EngineHTTPError, TimeoutError) as exc:
            raise JamError(f"jam stopped: the engine failed ({exc})") from None
        finally:
            if upload_path is not None:
                _remove_quietly(upload_path)
            with self._lock:
                self._job_id = None
        if job.get("state") == "cancelled" or self._stop.is_set():
            return None
        if job.get("state") != "done" or not job.get("results"):
            raise JamError(f"jam stopped: chunk {chunk.index + 1} {job.get('error') or 'failed'}")
        result = job["results"][0]
        work = os.path.join(app.config.work_folder, f"jam-result-{chunk.job_id}.wav")
        try:
            app.client.download(result.get("url") or result["file_id"], work)
            audio, sr = read_audio(work)
        except (EngineUnavailable, EngineHTTPError, ClipError) as exc:
            raise JamError(f"jam stopped: cannot fetch chunk {chunk.index + 1} ({exc})") from None
        finally:
            _remove_quietly(work)
        host_sr, new_samples = self._host_sr(), grid.span_samples(region.start_s, region.end_s, ENGINE_SAMPLE_RATE)
        if region_pcm(result, host_sr):  # only the new chunk came back, at the host rate
            host_audio = apply_edge_fades(take(audio, 0, region.samples(host_sr)), host_sr, app.config.fade_ms)
            new_audio = take(resample(audio, sr, ENGINE_SAMPLE_RATE), 0, new_samples)
        else:
            window_start_s = region.start_s - chunk_request.offset_s
            host_audio = cut_result(audio, sr, window_start_s, region, host_sr, app.config.fade_ms)
            new_audio = take(resample(audio, sr, ENGINE_SAMPLE_RATE),
                             grid.seconds_to_samples(chunk_request.offset_s, ENGINE_SAMPLE_RATE), new_samples)
        chains = request["task_type"] == "repaint" and result.get("take_file_id")
        self._next_take = (result["take_file_id"], chunk_request.offset_s + region.length_s) if chains else None
        return host_audio, new_audio, result.get("seed"), result

    def _insert(self, chunk: Chunk) -> bool:
        if self.insert_mode == "none":
            return False
        adapters = [a for a in self.app.adapters.values() if getattr(a, "can_insert", False)
                    and a.status().get("connected")]
        adapters.sort(key=lambda a: a.status().get("last_seen") or 0, reverse=True)
        if not adapters:
            self._emit({"type": "offer", "path": chunk.path, "message": "no DAW connected that can insert"})
            return False
        adapter = adapters[0]
        from bridge.adapters import AdapterError
        try:
            if hasattr(adapter, "insert_on_named_track"):
                adapter.insert_on_named_track(chunk.path, chunk.start_s, self.track,
                                              length_s=chunk.end_s - chunk.start_s,
                                              timeout_s=self.app.config.insert_timeout_s)
            else:
                adapter.insert(chunk.path, chunk.start_s, new_track=not any(c.inserted for c in self.chunks),
                               track_name=self.track, length_s=chunk.end_s - chunk.start_s,
                               timeout_s=self.app.config.insert_timeout_s)
        except AdapterError as exc:
            self._emit({"type": "offer", "path": chunk.path,
                        "message": f"{exc}; drag the chunk into the DAW from the clip folder"})
            return False
        return True

    # ------------------------------------------------------------------ helpers
    def _host_sr(self) -> int:
        return int(self.app.host_state.get("sample_rate") or self.app.config.sample_rate)

    def _cancel_job(self) -> None:
        with self._lock:
            job_id = self._job_id
        if job_id is None:
            return
        from engine.client import EngineHTTPError, EngineUnavailable
        try:
            self.app.client.cancel(job_id)
        except (EngineHTTPError, EngineUnavailable):
            pass  # already finished, or the engine is gone: nothing runs either way

    def _skip(self, tempo_map: TempoMap, from_bar: int, to_bar: int) -> None:
        from_s, to_s = tempo_map.bar_to_seconds(from_bar), tempo_map.bar_to_seconds(to_bar)
        self._emit({"type": "jam_skip", "from_s": from_s, "to_s": to_s,
                    "message": f"generation fell behind: skipping from bar {from_bar + 1} to bar {to_bar + 1}"})

    def _announce_queued(self) -> None:
        """Show the next chunk as queued (once) while jam waits for the playhead."""
        index = len(self.chunks)
        if self._queued_index == index:
            return
        self._queued_index = index
        tempo_map = self.tempo_map
        queued = Chunk(index, self.next_bar, self.bars, tempo_map.bar_to_seconds(self.next_bar),
                       tempo_map.bar_to_seconds(self.next_bar + self.bars), "queued")
        self._emit_chunk_state(queued)

    def _emit_chunk_state(self, chunk: Chunk) -> None:
        self._emit({"type": "jam_chunk_state", **chunk.to_dict()})

    def _emit_chunk(self, chunk: Chunk) -> None:
        self._emit({"type": "jam_chunk", **chunk.to_dict()})

    def _finish(self, message: str) -> None:
        with self._lock:
            if self.state == "stopped":
                return
            self.state, self.message = "stopped", message
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._emit({"type": "jam_state", "state": "stopped", "message": message})

    def _emit(self, event: Event) -> None:
        emit = getattr(self.app, "_emit", None)
        if emit is not None:
            emit(event, self.notify)
        elif self.notify is not None:
            self.notify(event)


class JamController:
    """The app's jam: at most one session at a time; start, stop, prompt and toggle."""

    def __init__(self, app: Any, clock: Callable[[], float] = time.time):
        self.app = app
        self.clock = clock
        self.session: JamSession | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.session is not None and self.session.running

    def start(self, settings: dict[str, Any] | None = None,
              notify: Callable[[Event], None] | None = None) -> JamSession:
        with self._lock:
            if self.running:
                raise JamError("jam is already running: send /acecomp/jam/stop first")
            self.session = JamSession(self.app, settings, notify, clock=self.clock)
            self.session.start()
            return self.session

    def stop(self, message: str = "stopped") -> bool:
        session = self.session
        if session is None or not session.running:
            return False
        session.stop(message)
        return True

    def prompt(self, caption: str) -> None:
        if not self.running:
            raise JamError("jam is not running")
        self.session.set_caption(caption)

    def toggle(self, settings: dict[str, Any] | None = None) -> None:
        if self.running:
            self.stop()
        else:
            self.start(settings)


def jam_controller(app: Any) -> JamController:
    """The app's JamController (made on first use)."""
    controller = getattr(app, "jam", None)
    if controller is None:
        controller = JamController(app)
        app.jam = controller
    return controller


def _metas(app: Any, tempo_map: TempoMap, at_s: float) -> dict[str, Any]:
    return host_metas(tempo_map, at_s, _key(app.host_state.get("key")))


def _key(value: Any) -> str | None:
    from engine.request import is_valid_keyscale
    return value if isinstance(value, str) and is_valid_keyscale(value) else None


def _positive_int(value: Any, name: str) -> int:
    """A whole number 1-64 from an int, a whole float (OSC sends floats) or a numeric string."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise JamError(f"{name} {value!r} must be a whole number") from None
    if isinstance(value, bool) or not number.is_integer():
        raise JamError(f"{name} {value!r} must be a whole number")
    number = int(number)
    if not 1 <= number <= 64:
        raise JamError(f"{name} {number} must be 1-64")
    return number


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
