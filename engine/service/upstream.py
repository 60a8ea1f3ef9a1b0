"""A compatible subset of upstream ACE-Step 1.5's REST API (`acestep-api`).

So that existing clients (the ACE-Step VST3 plugin, ACE-Step-DAW, scripts written
for upstream) work against our engine:

- `POST /release_task`  JSON, form or multipart (files `src_audio`/`ctx_audio`,
  `reference_audio`/`ref_audio`) -> `{"data": {"task_id", "status": "queued", "queue_position"}, "code": 200, ...}`
- `POST /query_result`  `{"task_id_list": [...]}` (or that list as a JSON string) ->
  `{"data": [{"task_id", "status": 0|1|2, "result": "<JSON list of results>", ...}], ...}`
- `GET /v1/audio?path=...`  downloads a rendered file (only files under the results folder)
- `GET /v1/stats`  job counts

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
import time
import urllib.parse
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile as StarletteUploadFile

from engine.request import GenerationRequest, RequestError
from engine.service.core import FILE_REF_PREFIX, EngineService, UnknownJob
from engine.service.http_common import HTTPProblem, check_content_length, loads_json, save_upload

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
_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(GenerationRequest)}


def add_upstream_routes(app: FastAPI, service: EngineService) -> None:
    @app.post("/release_task", summary="Upstream ACE-Step 1.5: submit a task", tags=["upstream"])
    async def release_task(request: Request) -> dict:
        params, uploads = await _read_params(request)
        _check_body_token(app, request, params)
        generation = upstream_to_request(params)
        for field_name, upload in uploads.items():
            saved = await save_upload(service, upload, field_name)
            generation[UPLOAD_FIELDS[field_name]] = FILE_REF_PREFIX + saved["id"]
        job = service.submit(generation, priority="interactive")
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
        average = round(sum(durations) / len(durations), 3) if durations else None
        return envelope({"jobs": counts, "queue_size": counts["queued"], "avg_job_seconds": average})


def envelope(data: Any) -> dict:
    return {"data": data, "code": 200, "error": None, "timestamp": int(time.time() * 1000), "extra": None}


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
    """One element of upstream's `query_result` answer."""
    try:
        job = service.job_json(task_id)
    except UnknownJob:
        return {"task_id": task_id, "status": 2, "result": "[]", "error": f"no task with id '{task_id}'"}
    status = {"queued": 0, "running": 0, "done": 1}.get(job["state"], 2)
    request = job["request"]
    progress = job["progress"] or {}
    items = []
    if status == 1:
        seeds = ",".join(str(r["seed"]) for r in job["results"])
        models = job.get("models") or {}
        plan = job.get("lm_plan") or {}
        metas = {
            "bpm": plan.get("bpm", request.get("bpm")),
            "duration": plan.get("duration", request.get("duration")),
            "genres": "",
            "keyscale": plan.get("keyscale", request.get("keyscale")),
            "timesignature": plan.get("timesignature", request.get("timesignature")),
        }
        for result in job["results"]:
            items.append({
                "file": "/v1/audio?path=" + urllib.parse.quote(result["path"], safe=""),
                "url": result["url"], "wave": "", "status": 1, "create_time": int(job["created_at"]),
                "env": "ace-companion", "prompt": request.get("caption", ""), "lyrics": request.get("lyrics", ""),
                "metas": metas, "generation_info": _generation_info(job), "seed_value": seeds,
                "lm_model": models.get("lm"), "dit_model": models.get("dit"),
            })
    entry = {"task_id": task_id, "status": status, "result": json.dumps(items), "state": job["state"],
             "progress_text": _progress_text(progress), "progress": progress}
    if status == 2:
        entry["error"] = job["error"] or job["state"]
    return entry


def _progress_text(progress: dict[str, Any]) -> str:
    stage = progress.get("stage", "")
    total = progress.get("total") or 0
    if total:
        return f"{stage} {progress.get('step', 0)}/{total}"
    return str(progress.get("message") or stage)


def _generation_info(job: dict[str, Any]) -> str:
    timings = job.get("timings") or {}
    total = timings.get("total")
    if total is None and job.get("started_at") and job.get("finished_at"):
        total = job["finished_at"] - job["started_at"]
    return f"generated in {total:.2f} s" if isinstance(total, (int, float)) else ""
