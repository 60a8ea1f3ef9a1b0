"""Source audio for the engine: the project span a plan needs, rendered by the DAW or cut from
the exported song file, written as a 48 kHz WAV and uploaded. Returns the engine's file id.

Hot path: each uploaded span is remembered with the version of the audio it holds (REAPER's
project change count, or the export file's mtime and size). While that version holds, the next
action on the same span refers to the same upload (`file:<id>`): nothing is rendered, written
or uploaded again. The local copy stays, so an upload the engine has since deleted (its
uploads expire) is sent again from it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import soundfile as sf

from bridge import grid
from bridge.actions import ActionPlan, no_source_message
from bridge.adapters import AdapterError
from bridge.clips import ENGINE_SAMPLE_RATE, ClipError, read_audio, resample, source_excerpt, take, write_context
from bridge.errors import BridgeError

KEEP_SOURCES = 4  # uploaded spans remembered (one local WAV each)


@dataclass
class CachedSource:
    file_id: str
    path: str  # the local 48 kHz copy that was uploaded
    version: str  # what the audio is a copy of: DAW change count or file mtime/size


class SourceFetcher:
    def __init__(self, client: Any, config: Any, renderer: Callable[[], Any], adapter_names: Callable[[], tuple]):
        self.client = client
        self.config = config
        self._renderer = renderer  # -> the connected DAW adapter that can render, or None
        self._adapter_names = adapter_names
        self._cache: OrderedDict[tuple, CachedSource] = OrderedDict()
        self._lock = threading.Lock()  # one fetch at a time: a burst on one span renders once
        self.renders = 0  # counters, for tests and the benchmark
        self.uploads = 0

    def file_id(self, plan: ActionPlan, timings: dict[str, float]) -> str | None:
        """The engine file id of the plan's source span; None when the action needs no source."""
        if plan.source_span is None:
            return None
        with self._lock:
            return self._file_id(plan, timings)

    def _file_id(self, plan: ActionPlan, timings: dict[str, float]) -> str:
        start_s, end_s = plan.source_span
        key = self._key(plan)
        cached = self._cache.get(key) if self.config.source_cache else None
        folder = os.path.join(self.config.work_folder, "sources")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"context-{uuid.uuid4().hex[:10]}.wav")
        clock = time.perf_counter()
        ready, audio, version = self._source(start_s, end_s, plan.source_file, cached.version if cached else None,
                                             path, self._offset(plan))
        timings["source_s"] = time.perf_counter() - clock
        if not ready and audio is None and cached is not None:  # unchanged since the last upload: refer to it
            self._cache.move_to_end(key)
            return cached.file_id
        try:
            if not ready:
                clock = time.perf_counter()
                write_context(path, audio)
                timings["context_write_s"] = time.perf_counter() - clock
            clock = time.perf_counter()
            file_id = self._upload(path)
            timings["upload_s"] = time.perf_counter() - clock
        except BaseException:
            remove_quietly(path)
            raise
        if self.config.source_cache and version is not None:
            self._remember(key, CachedSource(file_id, path, version))
        else:
            remove_quietly(path)
        return file_id

    def upload_again(self, file_id: str) -> str | None:
        """The engine no longer has `file_id` (expired): upload its local copy again and return
        the new id; None when it was not a remembered source."""
        with self._lock:
            for entry in self._cache.values():
                if entry.file_id == file_id and os.path.isfile(entry.path):
                    entry.file_id = self._upload(entry.path)
                    return entry.file_id
        return None

    def forget(self) -> None:
        with self._lock:
            for entry in self._cache.values():
                remove_quietly(entry.path)
            self._cache.clear()

    # ---------------------------------------------------------------- pieces
    def _key(self, plan: ActionPlan) -> tuple:
        start_s, end_s = plan.source_span
        where = ("file", os.path.abspath(plan.source_file), self._offset(plan)) if plan.source_file \
            else ("render", self.config.render_source)
        return (*where, round(start_s, 6), round(end_s, 6))

    def _offset(self, plan: ActionPlan) -> float:
        """Project time of the source file's first sample: the plan's (a rendered sketch), else the config's."""
        return self.config.source_offset_s if plan.source_offset_s is None else plan.source_offset_s

    def _remember(self, key: tuple, entry: CachedSource) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            remove_quietly(old.path)
        self._cache[key] = entry
        while len(self._cache) > KEEP_SOURCES:
            remove_quietly(self._cache.popitem(last=False)[1].path)

    def _upload(self, path: str) -> str:
        self.uploads += 1
        return self.client.upload(path)

    def _source(self, start_s: float, end_s: float, source_file: str | None, since: str | None, path: str,
                file_offset_s: float = 0.0):
        """Project time [start_s, end_s) at 48 kHz: (ready, audio, version). `ready`: the DAW
        rendered it at 48 kHz straight into `path`, to upload as it is; else `audio` holds it,
        or is None when the source is unchanged since version `since`."""
        try:
            if source_file:
                version = file_version(source_file)
                if since is not None and version == since:
                    return False, None, version
                audio = source_excerpt(source_file, start_s, end_s, ENGINE_SAMPLE_RATE, file_offset_s)
                return False, audio, version
            return self._rendered(start_s, end_s, since, path)
        except ClipError as exc:
            raise BridgeError(str(exc)) from None

    def _rendered(self, start_s: float, end_s: float, since: str | None, path: str):
        adapter = self._renderer()
        if adapter is None:
            raise BridgeError(no_source_message(self._adapter_names()))
        try:
            rendered, version = adapter.render_if_changed(start_s, end_s, path, since,
                                                          timeout_s=self.config.render_timeout_s,
                                                          source=self.config.render_source,
                                                          sample_rate=ENGINE_SAMPLE_RATE)
        except AdapterError as exc:
            remove_quietly(path)
            raise BridgeError(str(exc)) from None
        if rendered is None:
            return False, None, version
        self.renders += 1
        try:
            info = sf.info(rendered)
        except (sf.LibsndfileError, RuntimeError) as exc:
            remove_quietly(rendered)
            raise BridgeError(f"cannot read {adapter.name}'s render {rendered}: {exc}") from None
        expected_samples = grid.span_samples(start_s, end_s, info.samplerate)
        if info.frames < 0.98 * expected_samples:
            remove_quietly(rendered)
            raise BridgeError(f"{adapter.name} rendered {info.frames / info.samplerate:.2f} s instead of "
                              f"{(end_s - start_s):.2f} s: the render is incomplete (cancelled or failed?)")
        if (rendered == path and info.samplerate == ENGINE_SAMPLE_RATE and info.channels == 2
                and info.format == "WAV" and abs(info.frames - expected_samples) <= 1):
            return True, None, version  # already what the engine takes: no read, resample or write
        try:
            audio, sr = read_audio(rendered)
        finally:
            remove_quietly(rendered)
        audio = resample(take(audio, 0, grid.span_samples(start_s, end_s, sr)), sr, ENGINE_SAMPLE_RATE)
        return False, take(audio, 0, grid.span_samples(start_s, end_s, ENGINE_SAMPLE_RATE)), version


def file_version(path: str) -> str:
    """What identifies the contents of an exported file cheaply: modification time and size."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BridgeError(f"source file not found: {path}") from None
    return f"{st.st_mtime_ns}:{st.st_size}"


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
