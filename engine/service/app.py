"""The engine's HTTP API (FastAPI), built around an `EngineService`.

Errors are JSON `{"detail": "<what is wrong>", "field": "<request field>"|null}`:
400 malformed body or unusable upload, 401 missing/wrong token, 404 unknown job or file,
413 upload too large, 422 a request field with a wrong type or value.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import sys
import time
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from engine import __version__
from engine.checkpoints import TINY_WARNING, tiny_in_use
from engine.lora import list_adapters
from engine.request import RequestError
from engine.service.core import FILE_REF_PREFIX, FINAL_STATES, PRIORITIES, EngineService, UnknownJob
from engine.service.guard import Guard, GuardSettings, allowed_host_set
from engine.service.http_common import HTTPProblem, check_content_length, loads_json, read_form, save_upload
from engine.service.lora_routes import add_lora_routes
from engine.service.upstream import add_upstream_routes, model_inventory
from engine.types import EngineError

JOB_UPLOAD_FIELDS = ("src_audio", "reference_audio")
KEEPALIVE_S = 15.0
LONG_WAIT_THREADS = 2
UPLOAD_THREADS = 4


# ------------------------------------------------------------------ bodies
class AutogenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


class LoadModelsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dit: str | None = Field(None, description="DiT checkpoint folder, e.g. acestep-v15-turbo; omit to keep")
    lm: str | None = Field(None, description="'0.6B', '1.7B', '4B', a folder name, or null to unload; "
                                              "omit to keep")


_JOB_BODY_SCHEMA = {
    "type": "object",
    "required": ["request"],
    "properties": {
        "request": {"type": "object", "description": "GenerationRequest fields (upstream ACE-Step 1.5 names)",
                    "additionalProperties": True},
        "priority": {"type": "string", "enum": list(PRIORITIES), "default": "interactive"},
        "autogen": {"type": "boolean", "default": False},
    },
}
_JOB_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _JOB_BODY_SCHEMA},
            "multipart/form-data": {"schema": {
                "type": "object",
                "required": ["request"],
                "properties": {
                    "request": {"type": "string", "description": "the GenerationRequest as JSON text"},
                    "priority": {"type": "string", "enum": list(PRIORITIES)},
                    "autogen": {"type": "string", "enum": ["true", "false"]},
                    "src_audio": {"type": "string", "format": "binary"},
                    "reference_audio": {"type": "string", "format": "binary"},
                },
            }},
        },
    }
}


_UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}}}}},
    }
}


def create_app(service: EngineService, token: str | None = None,
               allow_origins: list[str] | tuple[str, ...] = (), allow_hosts: list[str] | tuple[str, ...] = (),
               bound_host: str | None = None) -> FastAPI:
    """The API app.

    `allow_origins`: web pages (e.g. a browser DAW) allowed to call it (CORS). `allow_hosts`: extra
    names the engine may be reached under (`Host` header; "*" for any) besides localhost, its
    loopback addresses and `bound_host`. See `engine.service.guard` for what is refused and why.
    """
    app = FastAPI(title="ACE Companion engine", version=__version__,
                  description="Job API for ACE-Step 1.5 generation: queue, progress, cancel, results. "
                              "Also serves a compatible subset of upstream ACE-Step 1.5's REST API.")
    app.state.service = service
    # Quick routes (health, polling, cancel) are async and never wait on a thread. Work that can take
    # long (model switches, copying uploads) runs on these small pools of its own; callers beyond
    # their size wait in the event loop, holding no thread from the shared pool.
    app.state.long_wait_limiter = anyio.CapacityLimiter(LONG_WAIT_THREADS)
    app.state.upload_limiter = anyio.CapacityLimiter(UPLOAD_THREADS)
    app.state.token = token or None
    hosts, any_host = allowed_host_set(bound_host, list(allow_hosts))
    app.state.guard = GuardSettings(token=token or None, allowed_hosts=hosts, allowed_origins=tuple(allow_origins),
                                    max_upload_bytes=service.max_upload_bytes, any_host=any_host)

    # -------------------------------------------------------------- errors
    @app.exception_handler(HTTPProblem)
    async def _problem(_: Request, exc: HTTPProblem):
        return JSONResponse({"detail": exc.detail, "field": exc.field}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(_: Request, exc: StarletteHTTPException):  # 404 route, 405 method, body errors
        return JSONResponse({"detail": str(exc.detail), "field": None}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError):
        return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=422)

    @app.exception_handler(UnknownJob)
    async def _unknown_job(_: Request, exc: UnknownJob):
        return JSONResponse({"detail": f"no job with id '{exc.args[0]}'", "field": None}, status_code=404)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _: ClientDisconnect):
        # a client that drops an upload halfway: one line in the log, not a traceback
        service.log(f"{request.method} {request.url.path}: the client disconnected before the request was read")
        return JSONResponse({"detail": "client disconnected", "field": None}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            return JSONResponse({"detail": f"malformed JSON body: {message}", "field": None}, status_code=400)
        return JSONResponse({"detail": f"{field}: {message}" if field else message, "field": field},
                            status_code=422)

    # -------------------------------------------------------------- health and models
    @app.get("/health", summary="Engine status: models, device, memory, queue")
    async def health() -> dict:
        info = service.info()
        tiny = _tiny_weights(info)
        return {
            "status": "ok", "version": __version__, "uptime_s": round(time.time() - service.started_at, 1),
            "device": info.get("device"), "dtype": info.get("dtype"), "dit": info.get("dit"),
            "lm": info.get("lm"), "checkpoints": info.get("checkpoints"), "results": str(service.store.root),
            "memory": memory_status(), "queue": service.queue_counts(),
            "max_upload_bytes": service.max_upload_bytes, "auth": bool(app.state.token),
            "disk": service.store.disk_status(), "lora": info.get("lora"), "vram": info.get("vram"),
            "tiny_weights": tiny, "warning": TINY_WARNING if tiny else None,
            # upstream ACE-Step 1.5 clients read the same answer wrapped in `data`
            "data": {"status": "ok", "service": "ACE Companion engine", "version": __version__},
            "code": 200, "error": None, "timestamp": int(time.time() * 1000),
        }

    @app.get("/v1/models", summary="Loaded and available DiT / LM models")
    async def models() -> dict:
        return models_json(service)

    @app.post("/v1/models/load", summary="Switch the DiT and/or the LM (waits for the running job)")
    async def load_models(body: LoadModelsBody) -> dict:
        given = body.model_fields_set

        def load() -> dict:
            return service.load_models(dit=body.dit if "dit" in given else None,
                                       lm=body.lm if "lm" in given else ...)

        try:  # waits for the running job: on its own small pool, so waiting callers hold no shared thread
            info = await anyio.to_thread.run_sync(load, limiter=app.state.long_wait_limiter)
        except EngineError as exc:
            raise HTTPProblem(400, str(exc), "dit" if "dit" in given else "lm") from None
        return {"loaded": info, **models_json(service)}

    # -------------------------------------------------------------- files
    @app.post("/v1/files", summary="Upload an audio file; use it as \"file:<id>\" in a request",
              openapi_extra=_UPLOAD_OPENAPI)
    async def upload_file(request: Request) -> dict:
        check_content_length(request, service.max_upload_bytes)
        form = await read_form(request)
        upload = form.get("file")
        if not isinstance(upload, StarletteUploadFile):
            raise HTTPProblem(422, "file: missing (send the audio as multipart form field 'file')", "file")
        return await save_upload(service, upload, "file", request.app.state.upload_limiter)

    @app.get("/v1/files/{file_id}", summary="Download an uploaded file or a rendered result",
             response_class=FileResponse)
    async def download_file(file_id: str):
        found = service.file_path(file_id)
        if found is None:
            raise HTTPProblem(404, f"no file with id '{file_id}'")
        path, name = found
        return FileResponse(path, filename=name, media_type=_media_type(path.name))

    # -------------------------------------------------------------- jobs
    @app.post("/v1/jobs", summary="Queue a generation job", openapi_extra=_JOB_OPENAPI)
    async def submit_job(request: Request) -> dict:
        body = await read_job_body(service, request)
        job = service.submit(body["request"], priority=body.get("priority", "interactive"),
                             autogen=body.get("autogen", False))
        return {"id": job.id, "state": job.state}

    @app.get("/v1/jobs", summary="All jobs, oldest first")
    async def list_jobs() -> dict:
        return {"jobs": service.list_jobs()}

    @app.get("/v1/jobs/{job_id}", summary="One job: state, progress, results")
    async def get_job(job_id: str) -> dict:
        return service.job_json(job_id)

    @app.delete("/v1/jobs/{job_id}", summary="Cancel a queued or running job")
    async def cancel_job(job_id: str) -> dict:
        return service.job_json(service.cancel(job_id))

    @app.put("/v1/jobs/{job_id}/autogen", summary="Turn AutoGen (endless new variations) on or off")
    async def set_autogen(job_id: str, body: AutogenBody) -> dict:
        return service.job_json(service.set_autogen(job_id, body.enabled))

    @app.get("/v1/jobs/{job_id}/events", summary="Server-Sent Events: progress and state until the job ends",
             response_class=StreamingResponse)
    async def job_events(job_id: str):
        loop = asyncio.get_running_loop()
        queue, snapshot = service.subscribe(job_id, loop)  # raises UnknownJob -> 404
        return StreamingResponse(_event_stream(service, job_id, queue, snapshot), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    add_upstream_routes(app, service)
    add_lora_routes(app, service)
    document_errors(app)
    app.add_middleware(Guard)  # wraps every route, also those added to `app` later
    if allow_origins:  # added last so it wraps the token check and answers preflight requests itself
        app.add_middleware(CORSMiddleware, allow_origins=list(allow_origins), allow_methods=["*"],
                           allow_headers=["*"])
    return app


# ------------------------------------------------------------------ the OpenAPI document
def document_errors(app: FastAPI) -> None:
    """Make /openapi.json list the errors each route really answers, all in the `{detail, field}` shape.

    Applied when the document is first built, so it covers routes added after `create_app` too.
    Every route may answer 401 (token) and 403 (Host/Origin); routes with a body or query 400, 413,
    415 and 422; routes with an id in the path (and /v1/audio) 404; uploads 507 (disk full).
    """
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                codes = {"401", "403"}
                if operation.get("requestBody") or operation.get("parameters"):
                    codes |= {"400", "422"}
                if method in ("post", "put", "patch"):
                    codes |= {"400", "413", "415", "422", "507"}
                if "{" in path or path == "/v1/audio":
                    codes.add("404")
                for code in sorted(codes | ({"422"} & set(responses))):
                    responses[str(code)] = {"description": _ERROR_MEANINGS[code], "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for unused in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


_ERROR_SCHEMA = {"type": "object", "required": ["detail", "field"],
                 "properties": {"detail": {"type": "string"}, "field": {"type": ["string", "null"]}}}
_ERROR_MEANINGS = {
    "400": "malformed body (JSON, form) or an unusable upload", "401": "missing or wrong token",
    "403": "Host or Origin not allowed", "404": "no such job, file or result",
    "413": "body or upload too large", "415": "unsupported content type, or a form POST without "
                                             "X-ACE-Companion", "422": "a field with a wrong type or value",
    "507": "the results folder is full or read-only",
}


# ------------------------------------------------------------------ helpers used by the routes
async def _event_stream(service: EngineService, job_id: str, queue: asyncio.Queue, snapshot: dict):
    try:
        yield _sse("state", snapshot)
        if snapshot["state"] in FINAL_STATES:
            return
        while True:
            try:
                event, data = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            yield _sse(event, data)
            if event == "state" and data["state"] in FINAL_STATES:
                return
    finally:
        service.unsubscribe(job_id, queue)


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def read_job_body(service: EngineService, request: Request) -> dict:
    """Parse POST /v1/jobs: JSON, or a form (multipart) with a `request` JSON field and audio files."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        check_content_length(request, service.max_upload_bytes * 2)
        form = await read_form(request)
        text = form.get("request")
        if not isinstance(text, str):
            raise HTTPProblem(422, "request: missing form field 'request' (the request as JSON text)", "request")
        body: dict[str, Any] = {"request": _parse_json(text, "request")}
        for name in ("priority", "autogen"):
            value = form.get(name)
            if isinstance(value, str):
                body[name] = _form_bool(name, value) if name == "autogen" else value
        if not isinstance(body["request"], dict):
            raise HTTPProblem(422, "request: expected a JSON object", "request")
        for name in JOB_UPLOAD_FIELDS:
            upload = form.get(name)
            if isinstance(upload, StarletteUploadFile):
                saved = await save_upload(service, upload, name, request.app.state.upload_limiter)
                body["request"][name] = FILE_REF_PREFIX + saved["id"]
        return body
    if content_type not in ("application/json", ""):
        raise HTTPProblem(415, f"unsupported content type '{content_type}': send application/json "
                               f"or multipart/form-data", "content-type")
    raw = await request.body()
    body = _parse_json(raw.decode("utf-8", errors="replace"), None)
    if not isinstance(body, dict):
        raise HTTPProblem(422, "body: expected a JSON object like {\"request\": {...}}", "body")
    unknown = set(body) - {"request", "priority", "autogen"}
    if unknown:
        name = sorted(unknown)[0]
        raise HTTPProblem(422, f"{name}: unknown field (expected request, priority, autogen)", name)
    if "request" not in body:
        raise HTTPProblem(422, "request: missing (the GenerationRequest fields)", "request")
    if not isinstance(body["request"], dict):
        raise HTTPProblem(422, f"request: expected a JSON object, got {type(body['request']).__name__}",
                          "request")
    return body


def _parse_json(text: str, field: str | None) -> Any:
    try:
        return loads_json(text)
    except json.JSONDecodeError as exc:
        where = f"{field}: " if field else ""
        raise HTTPProblem(400, f"{where}malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                          field) from None


def _form_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise HTTPProblem(422, f"{name}: expected true or false, got {value!r}", name)


def _tiny_weights(info: dict) -> bool:
    """Whether the loaded models come from `make-tiny-checkpoints` (random weights: noise)."""
    root = info.get("checkpoints")
    try:
        return bool(root) and tiny_in_use(root, info.get("dit"), info.get("lm"))
    except OSError:
        return False


def models_json(service: EngineService) -> dict:
    """Loaded models plus the folders found under the checkpoints root."""
    info = service.info()
    root = info.get("checkpoints")
    dits, lms = [], []
    if root and os.path.isdir(root):
        for entry in sorted(os.listdir(root)):
            folder = os.path.join(root, entry)
            if not os.path.isdir(folder):
                continue
            if entry.startswith("acestep-5Hz-lm-"):
                lms.append(entry)
            elif os.path.isfile(os.path.join(folder, "silence_latent.pt")):
                dits.append(entry)
    loaded_dit, loaded_lm = info.get("dit"), info.get("lm")
    return {
        "dit": loaded_dit, "lm": loaded_lm, "device": info.get("device"), "dtype": info.get("dtype"),
        "checkpoints": root, "dits": dits, "lms": lms, "loras": list_adapters(root) if root else [],
        # upstream ACE-Step 1.5 shape, for its clients
        "data": model_inventory(service),
        "code": 200, "error": None,
    }


def memory_status() -> dict:
    """Process memory and, when torch with CUDA is loaded, GPU memory (MiB)."""
    status: dict[str, Any] = {"platform": platform.system()}
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            rss_pages = int(fh.read().split()[1])
        status["rss_mib"] = round(rss_pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        status["peak_rss_mib"] = round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                free, total = torch.cuda.mem_get_info()
                status["cuda_allocated_mib"] = round(torch.cuda.memory_allocated() / 2 ** 20, 1)
                status["cuda_reserved_mib"] = round(torch.cuda.memory_reserved() / 2 ** 20, 1)
                status["cuda_free_mib"] = round(free / 2 ** 20, 1)
                status["cuda_total_mib"] = round(total / 2 ** 20, 1)
        except Exception:
            pass
    return status


def _media_type(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower()
    return {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg",
            "json": "application/json"}.get(ext, "application/octet-stream")
