"""Source audio for the engine: the project span a plan needs, rendered by the DAW or cut from
the exported song file, written as a 48 kHz WAV and uploaded. Returns the engine's file id."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Callable

from bridge import grid
from bridge.actions import ActionPlan, no_source_message
from bridge.adapters import AdapterError
from bridge.clips import ENGINE_SAMPLE_RATE, ClipError, read_audio, resample, source_excerpt, take, write_context
from bridge.errors import BridgeError


class SourceFetcher:
    def __init__(self, client: Any, config: Any, renderer: Callable[[], Any], adapter_names: Callable[[], tuple]):
        self.client = client
        self.config = config
        self._renderer = renderer  # -> the connected DAW adapter that can render, or None
        self._adapter_names = adapter_names

    def file_id(self, plan: ActionPlan, timings: dict[str, float]) -> str | None:
        """Upload the plan's source span; None when the action needs no source."""
        if plan.source_span is None:
            return None
        start_s, end_s = plan.source_span
        clock = time.perf_counter()
        audio = self._audio(start_s, end_s, plan.source_file)
        timings["source_s"] = time.perf_counter() - clock
        os.makedirs(self.config.work_folder, exist_ok=True)
        path = os.path.join(self.config.work_folder, f"context-{uuid.uuid4().hex[:10]}.wav")
        try:
            clock = time.perf_counter()
            write_context(path, audio)
            timings["context_write_s"] = time.perf_counter() - clock
            clock = time.perf_counter()
            file_id = self.client.upload(path)
            timings["upload_s"] = time.perf_counter() - clock
        finally:
            remove_quietly(path)
        return file_id

    def _audio(self, start_s: float, end_s: float, source_file: str | None):
        """48 kHz audio of project time [start_s, end_s)."""
        try:
            if source_file:
                if not os.path.isfile(source_file):
                    raise BridgeError(f"source file not found: {source_file}")
                return source_excerpt(source_file, start_s, end_s, ENGINE_SAMPLE_RATE, self.config.source_offset_s)
            return self._rendered(start_s, end_s)
        except ClipError as exc:
            raise BridgeError(str(exc)) from None

    def _rendered(self, start_s: float, end_s: float):
        adapter = self._renderer()
        if adapter is None:
            raise BridgeError(no_source_message(self._adapter_names()))
        dest = os.path.join(self.config.work_folder, f"render-{uuid.uuid4().hex[:10]}.wav")
        try:
            path = adapter.render(start_s, end_s, dest, timeout_s=self.config.render_timeout_s,
                                  source=self.config.render_source)
            audio, sr = read_audio(path)
        except AdapterError as exc:
            raise BridgeError(str(exc)) from None
        finally:
            remove_quietly(dest)
        expected_samples = grid.span_samples(start_s, end_s, sr)
        if audio.shape[1] < 0.98 * expected_samples:
            raise BridgeError(f"{adapter.name} rendered {audio.shape[1] / sr:.2f} s instead of "
                              f"{(end_s - start_s):.2f} s: the render is incomplete (cancelled or failed?)")
        audio = resample(take(audio, 0, expected_samples), sr, ENGINE_SAMPLE_RATE)
        return take(audio, 0, grid.span_samples(start_s, end_s, ENGINE_SAMPLE_RATE))


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
