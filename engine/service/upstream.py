"""Upstream ACE-Step 1.5's REST API (`acestep-api`), as its clients use it.

So that existing clients (ACE-Step-DAW, the acestep VST3 plugin, scripts written for upstream)
work against our engine unchanged. Everything answers in upstream's envelope
`{"data", "code", "error", "timestamp", "extra"}`:

- `POST /release_task`  JSON, form or multipart (files `src_audio`/`ctx_audio`, `reference_audio`/`ref_audio`)
- `POST /query_result`  `{"task_id_list": [...]}`; `result` is a JSON list: progress while running,
  `result[0].error` when failed, one entry per file when done
- `GET /v1/audio?path=...`, `GET /v1/stats`, `GET /v1/model_inventory`, `POST /v1/init`
  (`/v1/lora/*`: engine/service/lora_routes.py)

Parameter names follow upstream (`prompt`, `audio_duration`, `key_scale`, `time_signature`,
`src_audio_path`, `use_random_seed`, ...), with its snake/camel-case aliases. Upstream-only
features we do not have (`sample_mode`, `sample_query`, `use_format`, custom `timesteps`)
are refused with a 422 naming the field rather than silently ignored; `audio_format: mp3`
renders WAV.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import time
import urllib.parse
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile as StarletteUploadFile

from engine.request import TASK_TYPES, GenerationRequest, RequestError
from engine.service.core import (
    DEFAULT_LM,
    FILE_REF_PREFIX,
    LM_PREFIX,
    PRIORITIES,
    EngineService,
    UnknownJob,
)
from engine.service.http_common import HTTPProblem, check_content_length, loads_json, save_upload
from engine.types import EngineError

# upstream name or alias -> our GenerationRequest field
ALIASES = {
    "prompt": "caption", "caption": "caption",
    "lyrics": "lyrics",
    "model": "dit",
    "key_scale": "keyscale", "keyscale": "keyscale", "keyScale": "keyscale",
    "time_signature": "timesignature", "timesignature": "timesignature", "timeSignature": "timesignature",
    "audio_duration": "duration", "duration": "duration", "target_duration": "duration",
    "audioDuration": "duration",
    "audio_code_string": "audio_codes", "audioCodeString": "audio_codes",
    "src_audio_path": "src_audio", "reference_audio_path": "reference_audio",
    "cot_caption": "use_cot_caption", "cot-caption": "use_cot_caption",
    "cot_language": "use_cot_language", "cot-language": "use_cot_language",
    "constrained_decoding": "use_constrained_decoding", "constrainedDecoding": "use_constrained_decoding",
    "constrained": "use_constrained_decoding",
    "inferenceSteps": "inference_steps", "guidanceScale": "guidance_scale", "batchSize": "batch_size",
    "taskType": "task_type", "vocalLanguage": "vocal_language", "audioFormat": "audio_format",
}
UPLOAD_FIELDS = {"src_audio": "src_audio", "ctx_audio": "src_audio",
                 "reference_audio": "reference_audio", "ref_audio": "reference_audio"}
# Accepted for compatibility and ignored: they tune upstream internals we do not have.
IGNORED = {"ai_token", "instruction", "lm_model_path", "lm_backend", "constrained_decoding_debug",
           "allow_lm_batch", "use_tiled_decode_upstream", "is_format_caption", "lora_name", "lora_scale",
           "task_id", "use_random_seed", "seed", "metas", "metadata", "user_metadata"}
# Upstream features this engine does not offer: refused when turned on / given.
UNSUPPORTED_FLAGS = {"sample_mode", "use_format", "useFormat", "format"}
UNSUPPORTED_TEXT = {"sample_query", "sampleQuery", "description", "desc", "timesteps"}
UPSTREAM_BATCH_SIZE = 2  # upstream's REST default
TURBO_TASKS = ("text2music", "repaint", "cover")
ENV = "ace-companion"  # the `env` upstream writes into each result entry
_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(GenerationRequest)}


QUEUE_MAXSIZE = 200  # upstream's default; /release_task answers 429 beyond it
INITIAL_AVG_JOB_SECONDS = 5.0  # upstream's estimate until a job has finished


def add_upstream_routes(app: FastAPI, service: EngineService) -> None:
    @app.post("/release_task", summary="Upstream ACE-Step 1.5: submit a task", tags=["upstream"])
    async def release_task(request: Request):
        try:
            params, uploads = await _read_params(request)
            _check_body_token(app, request, params)
            generation = upstream_to_request(params)
            generation["dit"] = _model_for_job(service, generation.get("dit"))
            if sum(service.queue_counts()[p] for p in PRIORITIES) >= QUEUE_MAXSIZE:
                raise HTTPProblem(429, f"Server busy: queue is full ({QUEUE_MAXSIZE} tasks waiting)")
            for field_name, upload in uploads.items():
                saved = await save_upload(service, upload, field_name)
                generation[UPLOAD_FIELDS[field_name]] = FILE_REF_PREFIX + saved["id"]
            job = service.submit(generation, priority="interactive")
        except HTTPProblem as exc:
            return refusal(exc.status, exc.detail, exc.field)
        except RequestError as exc:
            return refusal(422, str(exc), exc.field)
        position = service.job_json(job)["queue_position"]
        return envelope({"task_id": job.id, "status": "queued", "queue_position": position})

    @app.post("/query_result", summary="Upstream ACE-Step 1.5: status and results of tasks", tags=["upstream"])
    async def query_result(request: Request) -> dict:
        params, _ = await _read_params(request)
        _check_body_token(app, request, params)
        ids = params.get("task_id_list", params.get("taskIdList"))
        if isinstance(ids, str):
            try:
                ids = loads_json(ids)
            except json.JSONDecodeError:
                ids = [part.strip() for part in ids.split(",") if part.strip()]
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise HTTPProblem(422, "task_id_list: expected a list of task ids", "task_id_list")
        return envelope([task_entry(service, task_id) for task_id in ids])

    @app.get("/v1/audio", summary="Upstream ACE-Step 1.5: download a result by path", tags=["upstream"],
             response_class=FileResponse)
    def audio(path: str):
        resolved = service.result_path_allowed(path)
        if resolved is None:
            resolved = service.result_path_allowed(str(service.store.root / path))
        if resolved is None:
            raise HTTPProblem(404, f"no result file at '{path}' (only files under the results folder are served)",
                              "path")
        media = "audio/flac" if resolved.suffix == ".flac" else "audio/wav"
        return FileResponse(resolved, filename=resolved.name, media_type=media)

    @app.get("/v1/stats", summary="Upstream ACE-Step 1.5: job counts", tags=["upstream"])
    def stats() -> dict:
        jobs = service.list_jobs()
        counts = {"total": len(jobs), "queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
        durations = []
        for job in jobs:
            key = {"done": "succeeded"}.get(job["state"], job["state"])
            counts[key] = counts.get(key, 0) + 1
            if job["state"] == "done" and job["started_at"] and job["finished_at"]:
                durations.append(job["finished_at"] - job["started_at"])
        average = round(sum(durations) / len(durations), 3) if durations else INITIAL_AVG_JOB_SECONDS
        return envelope({"jobs": counts, "queue_size": counts["queued"], "queue_maxsize": QUEUE_MAXSIZE,
                         "avg_job_seconds": average})

    @app.get("/v1/model_inventory", summary="Upstream ACE-Step 1.5: installed and loaded models", tags=["upstream"])
    def inventory() -> dict:
        return envelope(model_inventory(service))

    @app.post("/v1/init", summary="Upstream ACE-Step 1.5: load or switch the DiT (and the LM)", tags=["upstream"])
    async def init_models(request: Request):
        try:
            body, _ = await _read_params(request)
        except HTTPProblem as exc:
            return refusal(exc.status, exc.detail, exc.field)
        # a model switch waits for the running job: off the event loop
        return await run_in_threadpool(init_answer, service, body)


def envelope(data: Any, code: int = 200, error: str | None = None) -> dict:
    return {"data": data, "code": code, "error": error, "timestamp": int(time.time() * 1000), "extra": None}


def refusal(status: int, message: str, field: str | None = None) -> JSONResponse:
    """An error answer both kinds of client read: upstream's envelope (`error`) plus our `detail`/`field`."""
    return JSONResponse({**envelope(None, status, message), "detail": message, "field": field}, status_code=status)


def installed_models(service: EngineService) -> tuple[list[str], list[str]]:
    """(DiT folders, LM folders) under the checkpoints root."""
    root = service.info().get("checkpoints")
    dits, lms = [], []
    if root and os.path.isdir(root):
        for entry in sorted(os.listdir(root)):
            folder = os.path.join(root, entry)
            if entry.startswith(LM_PREFIX) and os.path.isfile(os.path.join(folder, "config.json")):
                lms.append(entry)
            elif os.path.isfile(os.path.join(folder, "silence_latent.pt")):
                dits.append(entry)
    return dits, lms


def model_inventory(service: EngineService) -> dict[str, Any]:
    """Upstream's `/v1/model_inventory` data: DiTs with their tasks, LMs as {name, is_loaded}."""
    info = service.info()
    dits, lms = installed_models(service)
    loaded_dit, loaded_lm = info.get("dit"), info.get("lm")
    if loaded_dit and loaded_dit not in dits:
        dits.append(loaded_dit)
    if loaded_lm and loaded_lm not in lms:
        lms.append(loaded_lm)
    root = info.get("checkpoints") or ""
    return {
        "models": [{"name": d, "is_default": d == service.default_dit, "is_loaded": d == loaded_dit,
                    "supported_task_types": _task_types(os.path.join(root, d))} for d in dits],
        "default_model": service.default_dit,
        "lm_models": [{"name": m, "is_loaded": m == loaded_lm} for m in lms],
        "loaded_lm_model": loaded_lm or None,
        "llm_initialized": bool(loaded_lm),
    }


def _task_types(folder: str) -> list[str]:
    """Upstream's rule: turbo DiTs offer text2music/repaint/cover, the others every task."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as fh:
            turbo = bool(json.load(fh).get("is_turbo", False))
    except (OSError, ValueError, AttributeError):
        turbo = False
    return list(TURBO_TASKS if turbo else TASK_TYPES)


def _model_for_job(service: EngineService, model: str | None) -> str | None:
    """Upstream runs `model: ""` (or an unknown name) on the default model, never on whatever is loaded."""
    if not model:
        return service.default_dit
    dits, _ = installed_models(service)
    if dits and model not in dits:
        service.log(f"model '{model}' is not installed (have {', '.join(dits)}); using {service.default_dit}")
        return service.default_dit
    return model


def init_answer(service: EngineService, body: Any) -> Any:
    """POST /v1/init: load `model` (default: the default model) and, with init_llm, the LM."""
    if not isinstance(body, dict):
        return refusal(422, "body: expected a JSON object like {\"model\": ..., \"init_llm\": true}", "body")
    slot = body.get("slot")
    if slot not in (None, 1, "1"):
        if str(slot) in ("2", "3"):
            return envelope(None, 400, f"Slot {slot} is not available: this engine holds one DiT at a time "
                                       f"(slot 1); use slot 1 or leave it out")
        return refusal(422, f"slot: expected 1, 2 or 3, got {slot!r}", "slot")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        return refusal(422, "model: expected a DiT folder name such as 'acestep-v15-turbo'", "model")
    init_llm = body.get("init_llm", False)
    if not isinstance(init_llm, bool):
        return refusal(422, f"init_llm: expected true or false, got {init_llm!r}", "init_llm")
    lm_path = body.get("lm_model_path")
    if lm_path is not None and not isinstance(lm_path, str):
        return refusal(422, "lm_model_path: expected an LM folder name such as 'acestep-5Hz-lm-0.6B'",
                       "lm_model_path")
    target = (model or "").strip() or service.default_dit
    lm: Any = ...
    if init_llm:
        lm = os.path.basename((lm_path or "").strip().rstrip("/\\")) or service.default_lm or DEFAULT_LM
    try:
        loaded = service.load_models(dit=target, lm=lm)
    except (EngineError, RequestError) as exc:
        return envelope(None, 500, f"Model initialization failed: {exc}")
    inventory = model_inventory(service)
    return envelope({
        "message": "Model initialization completed", "slot": 1, "loaded_model": loaded.get("dit"),
        "loaded_lm_model": loaded.get("lm") if init_llm else None, "models": inventory["models"],
        "lm_models": inventory["lm_models"], "llm_initialized": inventory["llm_initialized"],
    })


async def _read_params(request: Request) -> tuple[dict[str, Any], dict[str, StarletteUploadFile]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    uploads: dict[str, StarletteUploadFile] = {}
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        check_content_length(request, request.app.state.service.max_upload_bytes * 2)
        try:
            form = await request.form()
        except Exception as exc:
            raise HTTPProblem(400, f"malformed form body: {exc}") from None
        params: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, StarletteUploadFile):
                if key not in UPLOAD_FIELDS:
                    raise HTTPProblem(422, f"{key}: unexpected file (use src_audio or reference_audio)", key)
                uploads[key] = value
            else:
                params[key] = value
        return params, uploads
    raw = await request.body()
    if not raw.strip():
        return {}, uploads
    try:
        params = loads_json(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPProblem(400, f"malformed JSON body ({exc})") from None
    if not isinstance(params, dict):
        raise HTTPProblem(422, "body: expected a JSON object", "body")
    return params, uploads


def _check_body_token(app: FastAPI, request: Request, params: dict[str, Any]) -> None:
    if getattr(request.state, "authorized", True):
        return
    given = params.get("ai_token")
    if isinstance(given, str) and hmac.compare_digest(given.encode(), app.state.token.encode()):
        return
    raise HTTPProblem(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' or ai_token")


def upstream_to_request(params: dict[str, Any]) -> dict[str, Any]:
    """Map upstream `release_task` parameters onto GenerationRequest fields (raises RequestError)."""
    out: dict[str, Any] = {"batch_size": UPSTREAM_BATCH_SIZE}
    flat = dict(params)
    for nested in ("metas", "metadata", "user_metadata"):
        value = flat.get(nested)
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = loads_json(value)
            except json.JSONDecodeError:
                raise RequestError(nested, "malformed JSON object") from None
        if isinstance(value, dict):
            for key, inner in value.items():
                flat.setdefault(key, inner)
    for key, value in flat.items():
        if key in UNSUPPORTED_FLAGS or key in UNSUPPORTED_TEXT:
            given = _truthy(value) if key in UNSUPPORTED_FLAGS else bool(str(value or "").strip())
            if given:
                raise RequestError(key, "not supported by this engine (ACE Companion); leave it out")
            continue
        if key in IGNORED:
            continue
        target = ALIASES.get(key, key)
        if target not in _FIELD_TYPES:
            continue  # upstream has many knobs; unknown ones are ignored as upstream does
        value = _coerce(target, value)
        if value is None and target not in ("dit", "src_audio", "reference_audio"):
            continue
        out[target] = value
    seed = _seed_value(flat)
    if seed is not None:
        if isinstance(seed, list):
            if len(seed) == int(out.get("batch_size", 1)):
                out["seeds"] = seed
            else:
                out["seed"] = seed[0]
        else:
            out["seed"] = seed
    if out.get("keyscale"):
        out["keyscale"] = normalize_keyscale(str(out["keyscale"]))
    if out.get("audio_format") == "mp3":
        out["audio_format"] = "wav"
    codes = out.get("audio_codes")
    if isinstance(codes, list) and codes and all(isinstance(c, str) for c in codes):
        out["audio_codes"] = "".join(codes)
    if not out.get("thinking") and out.get("task_type", "text2music") == "text2music":
        out.pop("audio_codes", None)  # upstream: without thinking, text2music ignores given codes
    return out


def _seed_value(params: dict[str, Any]) -> int | list[int] | None:
    """The seed(s) when `use_random_seed` is false (upstream's default is random)."""
    if _truthy(params.get("use_random_seed", True)):
        return None
    seed = params.get("seed")
    if seed is None or seed == "":
        return None
    if isinstance(seed, str) and "," in seed:
        try:
            return [int(part) for part in seed.split(",") if part.strip()]
        except ValueError:
            raise RequestError("seed", f"expected an integer or 'a,b,...', got {seed!r}") from None
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise RequestError("seed", f"expected an integer, got {seed!r}") from None
    return None if value < 0 else value


def _coerce(field_name: str, value: Any) -> Any:
    """Form posts carry strings; turn them into what the request schema expects."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "null", "none") and field_name not in ("caption", "lyrics"):
            return None
        kind = _FIELD_TYPES[field_name]
        if kind.startswith("bool"):
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise RequestError(field_name, f"expected true or false, got {value!r}")
        if kind.startswith(("int", "float")):  # upstream takes numbers as text (forms); our schema does not
            try:
                return int(text) if kind.startswith("int") and text.lstrip("+-").isdigit() else float(text)
            except (ValueError, OverflowError):
                raise RequestError(field_name, f"expected a number, got {value[:40]!r}") from None
        if kind.startswith("list") and text.startswith("["):
            try:
                return loads_json(text)
            except json.JSONDecodeError:
                raise RequestError(field_name, "malformed JSON list") from None
    if field_name == "lm_top_k" and value is None:
        return 0
    return value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def normalize_keyscale(text: str) -> str:
    """'Am' -> 'A minor', 'F#' -> 'F# major', 'c major' -> 'C major' (upstream accepts short forms)."""
    text = text.strip()
    parts = text.split()
    if len(parts) == 2:
        return f"{parts[0][:1].upper()}{parts[0][1:]} {parts[1].lower()}"
    if len(parts) == 1 and parts[0]:
        token = parts[0]
        mode = "major"
        if token.endswith("m") and len(token) > 1:
            token, mode = token[:-1], "minor"
        return f"{token[:1].upper()}{token[1:]} {mode}"
    return text


def task_entry(service: EngineService, task_id: str) -> dict[str, Any]:
    """One element of upstream's `query_result` answer.

    `result` is a JSON list, as upstream writes it: while the job waits or runs, one entry with
    `progress` (0..1) and `stage`; when it failed, one entry whose `error` says why; when done,
    one entry per audio file.
    """
    try:
        job = service.job_json(task_id)
    except UnknownJob:
        message = f"no task with id '{task_id}'"
        item = {"file": "", "wave": "", "status": 2, "create_time": 0, "env": ENV, "prompt": "", "lyrics": "",
                "metas": {}, "progress": 0.0, "stage": "failed", "error": message}
        return {"task_id": task_id, "status": 2, "result": json.dumps([item]), "progress_text": message,
                "error": message}
    status = {"queued": 0, "running": 0, "done": 1}.get(job["state"], 2)
    progress = job["progress"] or {}
    base = {"file": "", "wave": "", "status": status, "create_time": int(job["created_at"]), "env": ENV}
    if status == 1:
        items = [_result_item(job, result, base) for result in job["results"]]
    elif status == 2:
        items = [{**base, "prompt": "", "lyrics": "", "metas": {}, "progress": 0.0,
                  "stage": "failed" if job["state"] == "failed" else job["state"], "error": _failure(job)}]
    else:
        items = [{**base, "progress": progress_fraction(job["state"], progress), "stage": progress.get("stage")
                  or job["state"]}]
    entry = {"task_id": task_id, "status": status, "result": json.dumps(items), "state": job["state"],
             "progress_text": progress_text(job), "progress": progress}
    if status == 2:
        entry["error"] = _failure(job)
    return entry


def _result_item(job: dict[str, Any], result: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    request = job["request"]
    models = job.get("models") or {}
    plan = (job.get("lm_plan") or {}).get("metadata") or job.get("lm_plan") or {}
    seeds = ",".join(str(r["seed"]) for r in job["results"])
    seconds = float(result.get("duration") or 0.0)
    metas = {
        "bpm": plan.get("bpm", request.get("bpm")),
        "duration": int(seconds) if seconds == int(seconds) else round(seconds, 2),  # the file's real length
        "genres": "",
        "keyscale": plan.get("keyscale", request.get("keyscale")) or "",
        "timesignature": plan.get("timesignature", request.get("timesignature")) or "",
        "prompt": request.get("caption", ""), "lyrics": request.get("lyrics", ""),
    }
    return {**base, "file": "/v1/audio?path=" + urllib.parse.quote(result["path"], safe=""), "url": result["url"],
            "prompt": request.get("caption", ""), "lyrics": request.get("lyrics", ""), "metas": metas,
            "generation_info": _generation_info(job), "seed_value": seeds, "lm_model": models.get("lm") or "",
            "dit_model": models.get("dit") or "", "progress": 1.0, "stage": "succeeded"}


def _failure(job: dict[str, Any]) -> str:
    if job["state"] == "cancelled":
        return job["error"] or "cancelled"
    return job["error"] or "failed without a message"


# Share of the whole job each stage covers, for upstream's 0..1 `progress`.
STAGE_SPANS = {"queued": (0.0, 0.0), "load": (0.0, 0.02), "load_lm": (0.0, 0.05), "lm_cot": (0.05, 0.15),
               "lm_codes": (0.15, 0.3), "encode_audio": (0.3, 0.33), "encode_text": (0.33, 0.35),
               "diffusion": (0.35, 0.9), "decode": (0.9, 0.97), "postprocess": (0.97, 0.99)}


def progress_fraction(state: str, progress: dict[str, Any]) -> float:
    """0..1 for the whole job from the current stage and its step/total."""
    if state == "done":
        return 1.0
    if state != "running":
        return 0.0
    low, high = STAGE_SPANS.get(progress.get("stage") or "", (0.0, 0.0))
    total = progress.get("total") or 0
    done = min(1.0, (progress.get("step") or 0) / total) if total else 0.0
    return round(low + (high - low) * done, 3)


def progress_text(job: dict[str, Any]) -> str:
    """One line for the status bar: stage and percent while running, the error when failed."""
    state = job["state"]
    if state == "done":
        count = len(job["results"])
        return f"done: {count} file{'s' if count != 1 else ''}"
    if state in ("failed", "cancelled"):
        return _failure(job)
    if state == "queued":
        return f"queued (position {job.get('queue_position') or 1})"
    progress = job["progress"] or {}
    percent = round(100 * progress_fraction(state, progress))
    stage = progress.get("stage") or "running"
    total = progress.get("total") or 0
    steps = f" {progress.get('step', 0)}/{total}" if total > 1 else ""
    return f"{stage}{steps} ({percent}%)"


def _generation_info(job: dict[str, Any]) -> str:
    timings = job.get("timings") or {}
    total = timings.get("total")
    if total is None and job.get("started_at") and job.get("finished_at"):
        total = job["finished_at"] - job["started_at"]
    return f"generated in {total:.2f} s" if isinstance(total, (int, float)) else ""
