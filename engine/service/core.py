"""The engine service: a job queue in front of one warm `Pipeline`.

One worker thread runs `Pipeline.generate` for one job at a time: `interactive` jobs
before `background` ones, first-in first-out within a priority. Every change of a job
is written to `results/.jobs/<id>.json` so that a restarted engine finds its jobs
again, and is pushed to live listeners (the HTTP event streams).

Failures belong to the job, never to the engine: a bad request, a missing input file,
a model that will not load, running out of memory or a full disk each fail that one job
with a message meant for the musician, and the worker carries on.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.request import GenerationRequest, RequestError
from engine.service.store import Store, is_valid_id, new_id
from engine.types import Cancelled, EngineError, ProgressEvent

PRIORITIES = ("interactive", "background")
FINAL_STATES = ("done", "failed", "cancelled")
FILE_REF_PREFIX = "file:"
AUDIO_INPUT_FIELDS = ("src_audio", "reference_audio")
RESTARTED_MESSAGE = "engine restarted during the job"
UPLOAD_TTL_S = 3600.0  # an upload no job needs is deleted this long after its last use
LM_PREFIX = "acestep-5Hz-lm-"
DEFAULT_LM = LM_PREFIX + "0.6B"  # upstream's default LM, the one thinking loads when none is named


class UnknownJob(KeyError):
    """No job with that id."""


@dataclass
class Job:
    id: str
    request: dict[str, Any]
    priority: str = "interactive"
    autogen: bool = False
    seq: int = 0
    state: str = "queued"
    progress: dict[str, Any] = field(default_factory=lambda: {"stage": "queued", "step": 0, "total": 0,
                                                              "message": ""})
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    lm_plan: dict[str, Any] | None = None
    seeds: list[int] | None = None
    models: dict[str, Any] | None = None
    timings: dict[str, float] | None = None
    work: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    autogen_parent: str | None = None
    autogen_next: str | None = None
    cancel_requested: bool = False  # runtime only
    parsed: GenerationRequest | None = field(default=None, repr=False)  # runtime only: validated once

    _PERSISTED = ("id", "request", "priority", "autogen", "seq", "state", "progress", "error", "results",
                  "lm_plan", "seeds", "models", "timings", "work", "created_at", "started_at", "finished_at",
                  "autogen_parent", "autogen_next")

    def record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._PERSISTED}

    @staticmethod
    def record_problem(record: dict[str, Any]) -> str | None:
        """What is wrong with a persisted job record (from an older, newer or damaged engine), or None."""
        number = (int, float)
        kinds: dict[str, tuple] = {
            "request": (dict,), "priority": (str,), "autogen": (bool,), "seq": (int,), "state": (str,),
            "progress": (dict, type(None)), "error": (str, type(None)), "results": (list,),
            "lm_plan": (dict, type(None)), "seeds": (list, type(None)), "models": (dict, type(None)),
            "timings": (dict, type(None)), "created_at": number, "started_at": number + (type(None),),
            "finished_at": number + (type(None),), "autogen_parent": (str, type(None)),
            "autogen_next": (str, type(None)),
        }
        for name, allowed in kinds.items():
            if name not in record:
                if name in ("request", "state"):
                    return f"'{name}' is missing"
                continue
            value = record[name]
            if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
                return f"'{name}' is {type(value).__name__}, expected {' or '.join(k.__name__ for k in allowed)}"
        if record.get("priority", "interactive") not in PRIORITIES:
            return f"unknown priority {record['priority']!r}"
        for result in record.get("results", []):
            if not isinstance(result, dict) or not isinstance(result.get("path", ""), str) \
                    or not isinstance(result.get("file_id", ""), str):
                return "a result entry is not a {file_id, path, ...} object"
        return None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        known = {name: record[name] for name in cls._PERSISTED if name in record}
        if known.get("progress") is None:
            known.pop("progress", None)
        return cls(**known)


class EngineService:
    """Queue, worker, persistence and live events around one pipeline object.

    `pipeline` follows the `engine.pipeline.Pipeline` contract (`generate`, `info`,
    `load_dit`, `load_lm`). `log` receives one-line status messages (default: stderr).
    """

    def __init__(self, pipeline: Any, results_dir: str | os.PathLike = "results",
                 max_upload_bytes: int = 512 * 1024 * 1024, log: Callable[[str], None] | None = None,
                 upload_ttl_s: float = UPLOAD_TTL_S, allowed_roots: list[str | os.PathLike] | tuple = ()):
        self.pipeline = pipeline
        self.store = Store(results_dir)
        # Folders whose files a request may name by path (`--allow-path`); none by default.
        self.allowed_roots = [Path(os.path.realpath(os.path.expanduser(os.fspath(r)))) for r in allowed_roots]
        self.max_upload_bytes = int(max_upload_bytes)
        self.upload_ttl_s = float(upload_ttl_s)
        self.log = log or (lambda line: print(f"engine: {line}", file=sys.stderr, flush=True))
        self.started_at = time.time()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._pipeline_lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, deque[Job]] = {p: deque() for p in PRIORITIES}
        self._running: Job | None = None
        self._result_files: dict[str, Path] = {}
        self._subscribers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}
        self._seq = itertools.count()
        self._stopping = False
        self._worker: threading.Thread | None = None
        # What upstream clients call the default model: the DiT / LM loaded at start or chosen
        # with load_models; a job may load another DiT for itself without changing these.
        loaded = self.info()
        self.default_dit: str | None = loaded.get("dit")
        self.default_lm: str | None = loaded.get("lm")
        self._recover()

    # ================================================================ lifecycle
    def start(self) -> None:
        if self._worker is None:
            self._stopping = False
            self._worker = threading.Thread(target=self._work, name="engine-worker", daemon=True)
            self._worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker. A running job is put back in the queue for the next start."""
        with self._lock:
            self._stopping = True
            if self._running is not None:
                self._running.cancel_requested = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None

    def _recover(self) -> None:
        records, problems = self.store.load_jobs(check=Job.record_problem)
        for problem in problems:
            self.log(f"quarantined job file {problem}")
        max_seq = -1
        for record in records:
            try:
                job = Job.from_record(record)
            except TypeError as exc:
                self.log(f"skipping job {record.get('id')}: {exc}")
                continue
            max_seq = max(max_seq, int(job.seq or 0))
            changed = False
            if job.state == "running":
                self._finish_fields(job, "failed", RESTARTED_MESSAGE)
                changed = True
            elif job.state == "queued":
                missing = self._missing_inputs(job.request)
                if missing:
                    self._finish_fields(job, "failed", f"{missing}; it was needed by this job, which was "
                                                       f"queued when the engine stopped")
                    changed = True
            elif job.state not in FINAL_STATES:
                self._finish_fields(job, "failed", f"unknown state '{job.state}' in the job file")
                changed = True
            self._jobs[job.id] = job
            for result in job.results:
                self._remember_result_files(result)
            if job.state == "queued":
                self._queues[job.priority].append(job)
            if changed:
                self._persist(job)
        self._seq = itertools.count(max_seq + 1)
        for queue in self._queues.values():
            ordered = sorted(queue, key=lambda j: j.seq)
            queue.clear()
            queue.extend(ordered)
        if records:
            queued = sum(len(q) for q in self._queues.values())
            self.log(f"found {len(records)} earlier jobs in {self.store.jobs_dir} ({queued} queued)")

    # ================================================================ jobs API
    def submit(self, request: dict[str, Any], priority: str = "interactive", autogen: bool = False,
               autogen_parent: str | None = None) -> Job:
        """Validate and queue a request. Raises `RequestError` naming the bad field."""
        if priority not in PRIORITIES:
            raise RequestError("priority", f"{priority!r} is not one of: {', '.join(PRIORITIES)}")
        if not isinstance(autogen, bool):
            raise RequestError("autogen", f"expected true or false, got {autogen!r}")
        parsed = GenerationRequest.from_dict(request)
        if parsed.dit is not None:
            check_model_name("dit", parsed.dit)
        for name in AUDIO_INPUT_FIELDS:
            value = getattr(parsed, name)
            if value is not None:
                self._check_input(name, value)
        with self._lock:
            job = Job(id=new_id(), request=parsed.to_dict(), priority=priority, autogen=autogen,
                      seq=next(self._seq), autogen_parent=autogen_parent, parsed=parsed)
            self._jobs[job.id] = job
            self._persist(job)
            self._queues[priority].append(job)
            self._wake.notify_all()
            self._publish(job, "state")
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise UnknownJob(job_id)
            return job

    def job_json(self, job_or_id: Job | str) -> dict[str, Any]:
        with self._lock:
            job = self.get(job_or_id) if isinstance(job_or_id, str) else job_or_id
            data = job.record()
            data.pop("seq", None)
            data["queue_position"] = self._queue_position(job)
            return data

    def list_jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self.job_json(job) for job in sorted(self._jobs.values(), key=lambda j: j.seq)]

    def cancel(self, job_id: str) -> Job:
        """Remove a queued job, or stop a running one within one sampler step."""
        with self._lock:
            job = self.get(job_id)
            if job.state == "queued":
                self._queues[job.priority].remove(job)
                self._finish_fields(job, "cancelled", None)
                self._persist(job)
                self._publish(job, "state")
            elif job.state == "running":
                job.cancel_requested = True
                job.progress = {**job.progress, "message": "cancelling"}
                self._publish(job, "progress")
            return job

    def set_autogen(self, job_id: str, enabled: bool) -> Job:
        """Turn AutoGen on or off for a job and the chain of follow-ups it started.

        Off: no further follow-ups, and a follow-up still waiting in the queue is cancelled.
        On: the chain goes on; if its last job has already finished, a follow-up is queued now.
        """
        if not isinstance(enabled, bool):
            raise RequestError("enabled", f"expected true or false, got {enabled!r}")
        with self._lock:
            job = self.get(job_id)
            chain = [job]
            while chain[-1].autogen_next and chain[-1].autogen_next in self._jobs:
                chain.append(self._jobs[chain[-1].autogen_next])
            for member in chain:
                member.autogen = enabled
                if not enabled and member is not job and member.state == "queued":
                    self._queues[member.priority].remove(member)
                    self._finish_fields(member, "cancelled", None)
                    member.error = "AutoGen turned off"
                self._persist(member)
                self._publish(member, "state")
            tail = chain[-1]
            if enabled and tail.state in FINAL_STATES:
                self._queue_follow_up(tail)
            return job

    # ================================================================ files
    def file_path(self, file_id: str) -> tuple[Path, str] | None:
        """(path, download name) of an uploaded file or a rendered result, or None."""
        meta = self.store.upload_meta(file_id)
        if meta is not None:
            return self.store.upload_path(file_id), str(meta.get("name") or file_id)
        with self._lock:
            path = self._result_files.get(file_id)
        if path is not None and path.is_file():
            return path, path.name
        return None

    def result_path_allowed(self, path: str) -> Path | None:
        """A rendered audio file under the results folder named by its path (for upstream /v1/audio)."""
        if "\0" in path or not os.path.isabs(path):
            return None
        real = Path(os.path.realpath(path))
        return real if self._is_result_file(real) and real.is_file() else None

    # ================================================================ models
    def info(self) -> dict[str, Any]:
        try:
            return dict(self.pipeline.info())
        except Exception as exc:  # a half-switched pipeline must not break /health
            return {"error": f"{type(exc).__name__}: {exc}"}

    def load_models(self, dit: str | None = None, lm: Any = ...) -> dict[str, Any]:
        """Switch the DiT and/or the LM. Waits for the running job; raises EngineError on failure."""
        if dit is not None and (not isinstance(dit, str) or not dit.strip()):
            raise RequestError("dit", "expected a model folder name such as 'acestep-v15-turbo'")
        if lm is not ... and lm is not None and not isinstance(lm, str):
            raise RequestError("lm", "expected '0.6B', '1.7B', '4B', a folder name, or null")
        if dit is not None:
            check_model_name("dit", dit.strip())
        if isinstance(lm, str):
            check_model_name("lm", lm.strip())
        with self._pipeline_lock:
            try:
                if dit is not None:
                    self.log(f"loading DiT {dit}")
                    self.pipeline.load_dit(dit.strip())
                    self.default_dit = self.info().get("dit") or dit.strip()
                if lm is not ...:
                    lm_name = None if lm is None or lm.strip().lower() in ("", "none") else lm.strip()
                    self.log(f"loading LM {lm_name}")
                    self.pipeline.load_lm(lm_name)
                    if lm_name is not None:
                        self.default_lm = self.info().get("lm") or lm_name
            except (EngineError, RequestError):
                raise
            except MemoryError:
                raise EngineError("out of memory while loading the model") from None
            except Exception as exc:
                if _is_out_of_memory(exc):
                    raise EngineError("out of GPU memory while loading the model") from None
                raise EngineError(f"model failed to load: {type(exc).__name__}: {exc}") from None
        return self.info()

    # ================================================================ events
    def subscribe(self, job_id: str, loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Queue, dict]:
        """Register a listener; returns its queue and the job's current JSON (no event is missed)."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            snapshot = self.job_json(job_id)
            self._subscribers.setdefault(job_id, []).append((loop, queue))
        return queue, snapshot

    def unsubscribe(self, job_id: str, queue: asyncio.Queue) -> None:
        with self._lock:
            listeners = self._subscribers.get(job_id, [])
            self._subscribers[job_id] = [(lp, q) for lp, q in listeners if q is not queue]
            if not self._subscribers[job_id]:
                del self._subscribers[job_id]

    def _publish(self, job: Job, event: str) -> None:
        listeners = self._subscribers.get(job.id)
        if not listeners:
            return
        snapshot = self.job_json(job)
        for loop, queue in listeners:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (event, snapshot))
            except RuntimeError:  # the listener's event loop is gone
                pass

    # ================================================================ status
    def queue_counts(self) -> dict[str, int]:
        with self._lock:
            counts = {p: len(q) for p, q in self._queues.items()}
            counts["running"] = 0 if self._running is None else 1
            return counts

    # ================================================================ worker
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not any(self._queues.values()):
                    self._wake.wait()
                if self._stopping:
                    return
                queue = self._queues["interactive"] or self._queues["background"]
                job = queue.popleft()
                job.state = "running"
                job.started_at = time.time()
                job.progress = {"stage": "load", "step": 0, "total": 0, "message": "starting"}
                self._running = job
                self._persist(job)
                self._publish(job, "state")
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running = None
            self.prune_uploads(self.upload_ttl_s)

    def prune_uploads(self, ttl_s: float, now: float | None = None) -> list[str]:
        """Delete uploads that no queued or running job needs and that nothing has used for
        `ttl_s` seconds (used = uploaded, or named by a job). Keeps disk use bounded when a
        client (the DAW bridge) uploads context audio for every change. Returns the ids deleted."""
        now = time.time() if now is None else now
        last_used: dict[str, float] = {}
        needed: set[str] = set()
        with self._lock:
            for job in self._jobs.values():
                for name in AUDIO_INPUT_FIELDS:
                    value = job.request.get(name)
                    if isinstance(value, str) and value.startswith(FILE_REF_PREFIX):
                        file_id = value[len(FILE_REF_PREFIX):]
                        if job.state not in FINAL_STATES:
                            needed.add(file_id)
                        used = job.finished_at or job.created_at or 0.0
                        last_used[file_id] = max(last_used.get(file_id, 0.0), used)
        removed = []
        for file_id in self.store.upload_ids():
            if file_id in needed:
                continue
            meta = self.store.upload_meta(file_id) or {}
            used = max(last_used.get(file_id, 0.0), float(meta.get("created_at") or 0.0))
            if now - used > ttl_s:
                self.store.remove_upload(file_id)
                removed.append(file_id)
        return removed

    def _run(self, job: Job) -> None:
        try:
            request = self._resolved_request(job)
            with self._pipeline_lock:
                self._load_lm_for_thinking(job, request)
                output = self.pipeline.generate(request, progress=lambda ev: self._on_progress(job, ev),
                                                cancel=lambda: job.cancel_requested)
            if job.cancel_requested:
                raise Cancelled("cancelled")
            results = self._write_results(job, output)
        except Cancelled:
            if self._stopping:
                self._requeue_for_restart(job)
            else:
                self._finish(job, "cancelled", None)
            return
        except RequestError as exc:
            self._finish(job, "failed", f"bad request: {exc}")
            return
        except MemoryError:
            self._finish(job, "failed", _OOM_MESSAGE)
            return
        except EngineError as exc:  # includes ResultWriteError and CheckpointError
            self._finish(job, "failed", str(exc) or type(exc).__name__)
            return
        except Exception as exc:  # the engine keeps serving whatever one job does
            if _is_out_of_memory(exc):
                _free_cuda_cache()
                self._finish(job, "failed", _OOM_MESSAGE)
                return
            self.log(f"job {job.id} failed:\n{traceback.format_exc()}")
            self._finish(job, "failed", f"internal error: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            job.results = results
            job.seeds = [int(s) for s in output.seeds]
            job.models = dict(output.models or {})
            job.timings = {k: float(v) for k, v in (output.timings or {}).items()}
            job.work = getattr(output, "work", None) or dict(UNCOUNTED_WORK)
            job.lm_plan = output.lm_plan
            for result in results:
                self._remember_result_files(result)
            if job.autogen and not self._stopping:
                self._queue_follow_up(job)  # before "done", so listeners see `autogen_next`
            self._finish(job, "done", None)

    def _load_lm_for_thinking(self, job: Job, request: GenerationRequest) -> None:
        """thinking=true with no LM loaded: load one now, as upstream's server does on demand."""
        if not request.thinking or self.info().get("lm"):
            return
        from engine.lm.planner import SKIP_LM_TASKS

        if request.task_type in SKIP_LM_TASKS:
            return
        name = self.default_lm or self._installed_lm()
        self._on_progress(job, ProgressEvent("load_lm", 0, 1, f"loading LM {name} for thinking"))
        self.log(f"job {job.id}: loading LM {name} on demand (thinking=true)")
        self.pipeline.load_lm(name)
        self.default_lm = self.info().get("lm") or name

    def _installed_lm(self) -> str:
        """The smallest LM folder under the checkpoints root; EngineError saying how to get one if none."""
        root = Path(self.info().get("checkpoints") or "checkpoints")
        found = sorted((p.name for p in root.glob(LM_PREFIX + "*") if (p / "config.json").is_file()),
                       key=_lm_size)
        if not found:
            raise EngineError(f"thinking=true needs the 5 Hz LM, but no LM checkpoint is installed: "
                              f"{root / DEFAULT_LM} is missing. Download it with "
                              f"`ace-companion download --model 0.6B` (or send thinking=false)")
        return found[0]

    def _on_progress(self, job: Job, event: ProgressEvent) -> None:
        with self._lock:
            job.progress = event.to_dict() if hasattr(event, "to_dict") else dict(event)
            self._publish(job, "progress")

    def _write_results(self, job: Job, output: Any) -> list[dict[str, Any]]:
        """Write every item and its sidecar, or none: on failure the files of this job are removed."""
        audio_format = job.request.get("audio_format", "wav")
        sample_rate = int(output.sample_rate)
        results = []
        written: list[Path] = []
        try:
            self.store.check_room(sum(self.store.result_bytes(audio, audio_format) for audio in output.audio))
            for index, (audio, seed) in enumerate(zip(output.audio, output.seeds)):
                sidecar = {
                    "job_id": job.id, "index": index, "seed": int(seed), "request": job.request,
                    "resolved_request": output.request, "models": output.models, "timings": output.timings,
                    "lm_plan": output.lm_plan, "sample_rate": sample_rate, "created_at": job.created_at,
                }
                path = self.store.write_result(job.id, index, int(seed), audio, sample_rate, audio_format, sidecar,
                                               written=written)
                frames = _frame_count(audio)
                file_id = new_id()
                results.append({
                    "index": index, "seed": int(seed), "duration": round(frames / sample_rate, 4),
                    "sample_rate": sample_rate, "format": audio_format, "file_id": file_id,
                    "url": f"/v1/files/{file_id}", "name": path.name, "path": str(path),
                })
                full = getattr(output, "full_audio", None)
                if full is not None:  # only part of the take came back: keep the whole take as a source
                    from engine.audio_io import write_audio  # local: the service module stays torch-free

                    take_path = path.with_name(f"{path.stem}-take.wav")
                    written.append(take_path)
                    write_audio(take_path, full[index])
                    results[-1].update(take_file_id=new_id(), take_path=str(take_path))
        except Exception as exc:  # disk full, read-only, or libsndfile's "System error."
            self.store.remove_results(job.id, written)
            raise ResultWriteError(self.store.write_problem(exc)) from None
        if len(results) != len(output.audio):
            raise EngineError(f"pipeline returned {len(output.audio)} clips but {len(output.seeds)} seeds")
        return results

    # ================================================================ helpers
    def _remember_result_files(self, result: dict[str, Any]) -> None:
        """A result's file id (and its whole take's, when only part came back) -> path."""
        for id_key, path_key in (("file_id", "path"), ("take_file_id", "take_path")):
            if result.get(id_key) and result.get(path_key):
                self._result_files[result[id_key]] = Path(result[path_key])

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        with self._lock:
            if self._running is job:
                self._running = None  # together with the state change, so counts never disagree
            self._finish_fields(job, state, error)
            self._persist(job)
            self._publish(job, "state")

    @staticmethod
    def _finish_fields(job: Job, state: str, error: str | None) -> None:
        job.state = state
        job.error = error
        job.finished_at = time.time()
        job.cancel_requested = False
        stage = {"done": "done", "failed": "failed", "cancelled": "cancelled"}[state]
        job.progress = {**job.progress, "stage": stage, "message": error or state}

    def _requeue_for_restart(self, job: Job) -> None:
        with self._lock:
            if self._running is job:
                self._running = None
            job.state = "queued"
            job.started_at = None
            job.cancel_requested = False
            job.progress = {"stage": "queued", "step": 0, "total": 0, "message": "engine stopped; will resume"}
            self._queues[job.priority].appendleft(job)  # first in line when the worker starts again
            self._persist(job)

    def _queue_follow_up(self, job: Job) -> None:
        """AutoGen: the same request again with new random seeds, at background priority."""
        request = dict(job.request)
        request["seed"] = None
        request["seeds"] = None
        try:
            follow_up = self.submit(request, priority="background", autogen=True, autogen_parent=job.id)
        except RequestError as exc:  # e.g. its uploaded source file was removed
            self.log(f"AutoGen for job {job.id} stopped: {exc}")
            job.autogen = False
            self._persist(job)
            return
        job.autogen_next = follow_up.id
        self._persist(job)
        self._publish(job, "state")

    def _persist(self, job: Job) -> None:
        try:
            self.store.save_job(job.record())
        except OSError as exc:  # a full disk must not stop the engine; the job still runs in memory
            self.log(f"could not save job {job.id}: {exc.strerror or exc}")

    def _queue_position(self, job: Job) -> int:
        if job.state != "queued":
            return 0
        ahead = 0 if self._running is None else 1
        for priority in PRIORITIES:
            queue = self._queues[priority]
            if job in queue:
                return ahead + list(queue).index(job) + 1
            ahead += len(queue)
        return 0

    def confine_path(self, name: str, value: str) -> Path:
        """The file a request field names, if a client may have the engine read it; else RequestError.

        For every route that takes a path: uploads (`file:<id>`), rendered results, and files under
        `allowed_roots` (`--allow-path`), symlinks resolved. Anything else is refused without saying
        whether it exists."""
        return self._check_input(name, value)

    def _check_input(self, name: str, value: str) -> Path:
        path, problem = self._input_path(value)
        if problem:
            raise RequestError(name, problem)
        return path

    def _input_path(self, value: str) -> tuple[Path | None, str | None]:
        """Where an audio input is read from, or why it may not be read.

        Allowed: `file:<id>` of an upload or of a rendered result, a rendered result named by its
        path, and files under `allowed_roots`. Paths are resolved (symlinks too) before the check,
        and nothing is said about whether a file outside exists.
        """
        if value.startswith(FILE_REF_PREFIX):
            file_id = value[len(FILE_REF_PREFIX):]
            if is_valid_id(file_id):
                path = self.store.upload_path(file_id)
                if path is None:
                    with self._lock:
                        path = self._result_files.get(file_id)
                if path is not None and path.is_file():
                    return path, None
            return None, f"unknown file id '{file_id[:64]}' (upload the audio with POST /v1/files first)"
        if "\0" in value or "://" in value:
            return None, "expected 'file:<id>' or a path, not a URL (upload the audio with POST /v1/files)"
        if not os.path.isabs(value):
            return None, (f"'{value[:200]}' is not an absolute path; the engine does not expand '~' or read "
                          f"relative paths (upload the audio with POST /v1/files)")
        real = Path(os.path.realpath(value))
        records = (self.store.jobs_dir, self.store.uploads_dir)  # never by path, even under an allowed root
        if not any(_inside(real, folder) for folder in records) and (
                self._is_result_file(real) or any(_inside(real, root) for root in self.allowed_roots)):
            if real.is_file():
                return real, None
            return None, f"file not found on the engine machine: {value[:200]}"
        return None, (f"'{value[:200]}' is outside the folders this engine reads from (its results and "
                      f"--allow-path folders); upload the audio with POST /v1/files and send 'file:<id>'")

    def _is_result_file(self, real: Path) -> bool:
        """A rendered audio file: results/<job id>/<name>.wav|flac, not the job or upload records."""
        if not _inside(real, self.store.root):
            return False
        parts = real.relative_to(self.store.root).parts
        return len(parts) == 2 and is_valid_id(parts[0]) and real.suffix.lower() in (".wav", ".flac")

    def _input_problem(self, value: str) -> str | None:
        return self._input_path(value)[1]

    def _missing_inputs(self, request: dict[str, Any]) -> str | None:
        for name in AUDIO_INPUT_FIELDS:
            value = request.get(name)
            if isinstance(value, str) and value:
                problem = self._input_problem(value)
                if problem:
                    return f"input {name} is gone: {problem}"
        return None

    def _resolved_request(self, job: Job) -> GenerationRequest:
        """The job's validated request with `file:<id>` references turned into paths on this machine.

        The request was validated when it was submitted (or when a restarted engine read it back);
        only the audio inputs are swapped here, nothing is checked twice.
        """
        if job.parsed is None:
            job.parsed = GenerationRequest.from_dict(job.request)
        paths = {}
        for name in AUDIO_INPUT_FIELDS:
            value = getattr(job.parsed, name)
            if isinstance(value, str) and value:
                paths[name] = str(self._check_input(name, value))  # the resolved path, checked again now
        return job.parsed.with_inputs(**paths)


# `work` of a job whose pipeline does not count its work (stand-ins in tests).
UNCOUNTED_WORK = {"encoded_frames": 0, "decoded_frames": 0, "dit_tokens": 0, "dit_steps": 0,
                  "decoder_receptive_field": 0, "cache": {"source": "none", "conditioning": "miss"}}


def check_model_name(name: str, value: str) -> None:
    """Model names are folders directly under the checkpoints root, never paths."""
    if value in (".", "..") or any(sep in value for sep in ("/", "\\", "\0")) or os.path.isabs(value):
        raise RequestError(name, f"'{value[:100]}' is not a model folder name (a name such as "
                                 f"'acestep-v15-turbo', without '/' or '..')")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class ResultWriteError(EngineError):
    """Rendered audio could not be saved (disk full, permissions)."""


_OOM_MESSAGE = ("out of memory: try a shorter duration, a smaller batch_size, or a smaller LM; "
                "the engine is still running")


def _is_out_of_memory(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in ("OutOfMemoryError", "OutOfMemoryException") or "out of memory" in str(exc).lower()


def _free_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass


def _lm_size(folder: str) -> float:
    """'acestep-5Hz-lm-1.7B' -> 1.7 (unknown sizes sort last)."""
    try:
        return float(folder[len(LM_PREFIX):].rstrip("Bb"))
    except ValueError:
        return float("inf")


def _frame_count(audio: Any) -> int:
    shape = getattr(audio, "shape", None)
    if shape is None:
        return len(audio[0]) if audio and hasattr(audio[0], "__len__") else len(audio)
    return int(shape[-1])
