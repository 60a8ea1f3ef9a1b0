"""Following an action's engine jobs, and turning each result into a bar-exact host clip.

`JobFollower.follow` runs on a worker thread per action: it waits on each job's event stream,
reports progress, fetches the result, makes the clip (see `make_clip`) and hands it to
`place` (the app's DAW insertion). Failures end up in the action record and as error events;
they never raise out of the thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.actions import ActionPlan, ClipPlan
from bridge.clips import ClipMeta, apply_edge_fades, clip_path, cut_result, read_audio, resample, take, write_clip
from bridge.sources import remove_quietly
from engine.client import EngineHTTPError, EngineUnavailable

log = logging.getLogger(__name__)

Event = dict[str, Any]
Listener = Callable[[Event], None]


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
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (see bench/bridge_latency.py)


def region_pcm(result: dict[str, Any], host_sample_rate: int) -> bool:
    """True when the engine honoured `output_region`/`output_sample_rate`: the result is the
    clip's span only, at the host rate."""
    try:
        return result.get("output_region") is not None and int(result.get("sample_rate")) == host_sample_rate
    except (TypeError, ValueError):
        return False


class JobFollower:
    def __init__(self, client: Any, config: Any, emit: Callable[[Event, Listener | None], None],
                 place: Callable[[str, ClipPlan, str, str], tuple[bool, str | None, str]]):
        self.client = client
        self.config = config
        self._emit = emit
        self._place = place

    def follow(self, record: ActionRecord, plan: ActionPlan, notify: Listener | None) -> None:
        failures = []
        for job_id, clip in zip(record.job_ids, plan.clips):
            try:
                job = self.client.wait(job_id, timeout=self.config.job_timeout_s,
                                       on_progress=self._progress_reporter(record, job_id, notify))
            except (EngineUnavailable, TimeoutError, EngineHTTPError) as exc:
                failures.append(self._fail(record, job_id, f"lost the engine while waiting: {exc}", notify))
                continue
            state = job.get("state")
            if state == "cancelled":
                record.state = "cancelled"
                self._emit({"type": "error", "action_id": record.id, "job_id": job_id, "message": "cancelled"},
                           notify)
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

    def _progress_reporter(self, record: ActionRecord, job_id: str, notify: Listener | None):
        last: dict[str, Any] = {}

        def on_progress(job: dict[str, Any]) -> None:
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
        return on_progress

    def _fail(self, record: ActionRecord, job_id: str, message: str, notify: Listener | None) -> str:
        log.warning("%s job %s: %s", record.action, job_id, message)
        self._emit({"type": "error", "action_id": record.id, "job_id": job_id, "message": message}, notify)
        return message

    def _deliver(self, record: ActionRecord, plan: ActionPlan, clip: ClipPlan, job_id: str, result: dict[str, Any],
                 notify: Listener | None) -> None:
        path, length_samples = self.make_clip(plan, clip, job_id, result, record.timings)
        clock = time.perf_counter()
        inserted, adapter_name, message = self._place(path, clip, plan.insert_mode, record.id)
        record.timings["insert_s"] = record.timings.get("insert_s", 0.0) + time.perf_counter() - clock
        first_bar = int(round(plan.tempo_map.seconds_to_bar(clip.region.start_s))) + 1
        info = {"path": path, "job_id": job_id, "position_s": clip.region.start_s, "bar": first_bar,
                "length_samples": length_samples, "sample_rate": plan.host_sample_rate, "seed": result.get("seed"),
                "inserted": inserted, "adapter": adapter_name, "message": message, "track_name": clip.track_name}
        record.clips.append(info)
        self._emit({"type": "result", "action_id": record.id, **info}, notify)

    def make_clip(self, plan: ActionPlan, clip: ClipPlan, job_id: str, result: dict[str, Any],
                  timings: dict[str, float]) -> tuple[str, int]:
        """Download one result and write the host clip (acid + bext chunks). Returns (path, samples).

        Region PCM (the engine honoured `output_region`): the audio is already the clip at the
        host rate, so it is written as it comes. Otherwise the whole window is resampled and cut."""
        clock = time.perf_counter()
        os.makedirs(self.config.work_folder, exist_ok=True)
        work = os.path.join(self.config.work_folder, f"result-{job_id}-{result.get('index', 0)}.wav")
        self.client.download(result.get("url") or result["file_id"], work)
        try:
            audio, sample_rate = read_audio(work)
        finally:
            remove_quietly(work)
        timings["download_s"] = timings.get("download_s", 0.0) + time.perf_counter() - clock
        clock = time.perf_counter()
        clip_samples = clip.region.samples(plan.host_sample_rate)
        if region_pcm(result, plan.host_sample_rate) or _region_only(audio, sample_rate, clip):
            host_audio = resample(audio, sample_rate, plan.host_sample_rate)  # no-op at the host rate
            host_audio = apply_edge_fades(take(host_audio, 0, clip_samples), plan.host_sample_rate,
                                          self.config.fade_ms)
        else:
            host_audio = cut_result(audio, sample_rate, clip.window_start_s, clip.region, plan.host_sample_rate,
                                    self.config.fade_ms)
        timings["cut_s"] = timings.get("cut_s", 0.0) + time.perf_counter() - clock
        clock = time.perf_counter()
        first_bar = int(round(plan.tempo_map.seconds_to_bar(clip.region.start_s))) + 1
        seed = result.get("seed")
        path = clip_path(self.config.output_dir, plan.project, clip.label, first_bar, seed)
        write_clip(path, host_audio, ClipMeta(clip.region, plan.tempo_map, plan.host_sample_rate, plan.key,
                                              clip.label, seed, plan.project), self.config.sample_format)
        timings["clip_write_s"] = timings.get("clip_write_s", 0.0) + time.perf_counter() - clock
        return path, int(host_audio.shape[1])


def _region_only(audio, sample_rate: int, clip: ClipPlan) -> bool:
    """The result is as long as the clip's region, not its (longer) window: region PCM from an
    engine that does not label it. Cutting it as a window would misplace it."""
    window_s = clip.region.end_s - clip.window_start_s
    return window_s - clip.region.length_s > 0.01 and abs(audio.shape[1] - clip.region.samples(sample_rate)) <= 2


def _job_seconds(job: dict[str, Any]) -> float:
    try:
        return float(job["finished_at"]) - float(job["started_at"])
    except (KeyError, TypeError, ValueError):
        return 0.0
