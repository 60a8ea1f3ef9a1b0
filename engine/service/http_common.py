"""Pieces shared by the engine's own routes and the upstream-compatible ones: error answers and uploads."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from fastapi import Request, UploadFile
from starlette.requests import ClientDisconnect

from engine.service.core import EngineService
from engine.service.guard import BodyTooLarge
from engine.service.store import new_id


class HTTPProblem(Exception):
    """An error answer: status, message, and the request field it is about (if any)."""

    def __init__(self, status: int, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


MAX_INT_DIGITS = 400


def _parse_int(text: str) -> int | float:
    # Python refuses to parse integers over 4300 digits (a ValueError, not a JSON error); an integer
    # that long cannot be valid anywhere, so it becomes infinity and the field check names it (422).
    if len(text) > MAX_INT_DIGITS:
        return float("-inf") if text.startswith("-") else float("inf")
    return int(text)


def loads_json(text: str | bytes) -> Any:
    """json.loads that survives huge integers; raises json.JSONDecodeError / UnicodeDecodeError."""
    return json.loads(text, parse_int=_parse_int)


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_form(request: Request) -> Any:
    """The multipart/urlencoded form of a request (a few files and fields at most), or an HTTPProblem."""
    kind = content_type(request)
    if kind not in FORM_TYPES:
        raise HTTPProblem(415, f"unsupported content type '{kind or 'none'}': send multipart/form-data",
                          "content-type")
    try:
        return await request.form(max_files=4, max_fields=200)
    except (BodyTooLarge, ClientDisconnect):
        raise  # a client that went away is logged in one line by the app's ClientDisconnect handler
    except Exception as exc:  # malformed multipart, too many parts
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        raise HTTPProblem(400, f"malformed form body: {detail}") from None


def check_content_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 64 * 1024:
        raise HTTPProblem(413, f"upload too large: {int(length)} bytes (limit {limit} bytes)", "file")


async def save_upload(service: EngineService, upload: UploadFile, field: str, limiter: Any = None) -> dict:
    """Store an uploaded audio file under results/.uploads; checks size and that it is audio.

    The copy and the header check run on a thread (from `limiter`, an anyio CapacityLimiter, or
    anyio's default pool), so a big upload never blocks the event loop that answers /health."""
    import anyio

    return await anyio.to_thread.run_sync(_store_upload, service, upload, field, limiter=limiter)


def _store_upload(service: EngineService, upload: UploadFile, field: str) -> dict:
    import soundfile

    file_id = new_id()
    name = os.path.basename(upload.filename or "upload") or "upload"
    path = service.store.new_upload_path(file_id, name)
    size = 0
    try:
        upload.file.seek(0)
        with open(path, "wb") as out:
            while True:
                chunk = upload.file.read(1024 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > service.max_upload_bytes:
                    raise HTTPProblem(413, f"{field}: upload too large (limit {service.max_upload_bytes} bytes)",
                                      field)
                out.write(chunk)
        if size == 0:
            raise HTTPProblem(400, f"{field}: '{name}' is empty", field)
        try:
            info = soundfile.info(str(path))
        except Exception as exc:
            raise HTTPProblem(400, f"{field}: '{name}' is not a readable audio file "
                                   f"({str(exc).strip() or type(exc).__name__})", field) from None
        if info.frames <= 0 or info.samplerate <= 0:
            raise HTTPProblem(400, f"{field}: '{name}' holds no audio", field)
        from engine.audio_io import decode_problem  # the limit the engine applies when it reads the file

        problem = decode_problem(info.frames, info.channels, info.samplerate)
        if problem:
            raise HTTPProblem(400, f"{field}: '{name}' {problem}", field)
        meta = {"id": file_id, "name": name, "file": path.name, "size": size, "sample_rate": info.samplerate,
                "channels": info.channels, "duration": round(info.frames / info.samplerate, 4),
                "created_at": time.time()}
        service.store.save_upload_meta(file_id, meta)
    except BaseException as exc:
        service.store.remove_upload(file_id)
        if isinstance(exc, OSError):
            raise HTTPProblem(507, f"{field}: could not store the upload: {service.store.write_problem(exc)}",
                              field) from None
        raise
    return {"id": file_id, "name": name, "size": size, "duration": meta["duration"],
            "sample_rate": meta["sample_rate"], "channels": meta["channels"]}
