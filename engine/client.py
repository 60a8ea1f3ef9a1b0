"""Torch-free Python client for the engine's HTTP job API.

The DAW bridge and the control window use this to talk to `ace-companion engine`,
which may run on this machine or on another one (then with a bearer token).

    client = EngineClient("http://127.0.0.1:8001")
    job_id = client.submit({"caption": "warm lo-fi piano", "duration": 10})
    job = client.wait(job_id, timeout=300, on_progress=lambda j: print(j["progress"]))
    client.download(job["results"][0]["file_id"], "take1.wav")

Every method raises `EngineUnavailable` when the engine cannot be reached and
`EngineHTTPError(status, message)` when it answers with an error status.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8001"
FINAL_STATES = ("done", "failed", "cancelled")

# Sentinel so that `load_models(lm=None)` (unload the LM) differs from "leave the LM alone".
_UNCHANGED = object()


class EngineUnavailable(ConnectionError):
    """The engine is not running, not reachable, or did not answer in time."""


class EngineHTTPError(RuntimeError):
    """The engine answered with an error status; `message` is its explanation."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


class EngineClient:
    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.token = token or None
        self.timeout = timeout
        # The engine refuses form/multipart POSTs without this header (a web page cannot add it unasked).
        headers = {"X-ACE-Companion": "1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    # ----------------------------------------------------------- plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"engine at {self.base_url} is not reachable ({_describe(exc)})") from None
        _raise_for_status(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # ----------------------------------------------------------- API
    def health(self) -> dict:
        """`{"status": "ok", "device", "dtype", "dit", "lm", "memory": {...}, "queue": {...}}`."""
        return self._json("GET", "/health")

    def upload(self, path: str | os.PathLike) -> str:
        """Upload an audio file; returns its file id (use it as `"src_audio": "file:<id>"`)."""
        name = os.path.basename(os.fspath(path))
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise FileNotFoundError(f"cannot read {path}: {exc.strerror}") from None
        with fh:
            return self._json("POST", "/v1/files", files={"file": (name, fh, "application/octet-stream")})["id"]

    def submit(self, request: dict, priority: str = "interactive", autogen: bool = False) -> str:
        """Queue a job for a `GenerationRequest` dict; returns the job id."""
        body = {"request": request, "priority": priority, "autogen": bool(autogen)}
        return self._json("POST", "/v1/jobs", json=body)["id"]

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def jobs(self) -> list[dict]:
        return self._json("GET", "/v1/jobs")["jobs"]

    def cancel(self, job_id: str) -> dict:
        return self._json("DELETE", f"/v1/jobs/{job_id}")

    def set_autogen(self, job_id: str, enabled: bool) -> dict:
        return self._json("PUT", f"/v1/jobs/{job_id}/autogen", json={"enabled": bool(enabled)})

    def models(self) -> dict:
        return self._json("GET", "/v1/models")

    def load_models(self, dit: str | None = None, lm: Any = _UNCHANGED) -> dict:
        """Switch models. `dit=None` keeps the DiT; `lm=None` unloads the LM; omit `lm` to keep it."""
        body: dict[str, Any] = {}
        if dit is not None:
            body["dit"] = dit
        if lm is not _UNCHANGED:
            body["lm"] = lm
        return self._json("POST", "/v1/models/load", json=body)

    def download(self, file_id_or_url: str, dest_path: str | os.PathLike) -> str:
        """Save a result (file id, `/v1/files/<id>` or a full URL) to `dest_path`; returns the path."""
        ref = file_id_or_url
        if ref.startswith(self.base_url):
            ref = ref[len(self.base_url):]
        path = ref if ref.startswith("/") else f"/v1/files/{ref}"
        dest = os.fspath(dest_path)
        partial = dest + ".part"
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            _remove_quietly(partial)
            raise EngineUnavailable(f"engine at {self.base_url} is not reachable ({_describe(exc)})") from None
        except BaseException:
            _remove_quietly(partial)
            raise
        os.replace(partial, dest)
        return dest

    def events(self, job_id: str, timeout: float | None = None) -> Iterator[dict]:
        """Follow a job live (Server-Sent Events).

        Yields the job JSON for each event, with an extra key `"event"` ("progress" or
        "state"). The stream ends after the job reaches done, failed or cancelled.
        `timeout` limits the wait for each event (default: none).
        """
        stream_timeout = httpx.Timeout(self.timeout, read=timeout)
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=stream_timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                for event, data in _parse_sse(response.iter_lines()):
                    try:
                        payload = json.loads(data)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(payload, dict):
                        payload["event"] = event
                        yield payload
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"engine at {self.base_url} is not reachable ({_describe(exc)})") from None

    def wait(self, job_id: str, timeout: float = 600.0,
             on_progress: Callable[[dict], None] | None = None) -> dict:
        """Block until the job is done, failed or cancelled; returns the final job JSON.

        Follows the event stream and falls back to polling if the stream breaks.
        Raises `TimeoutError` when `timeout` seconds pass first.
        """
        deadline = time.monotonic() + timeout

        def finished(job: dict) -> bool:
            if on_progress is not None:
                on_progress(job)
            if job.get("state") in FINAL_STATES:
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f} s")
            return False

        try:
            for job in self.events(job_id, timeout=max(1.0, timeout)):
                if finished(job):
                    return job
        except (EngineUnavailable, httpx.HTTPError):
            pass  # fall through to polling; a real outage shows up there too
        while True:
            job = self.job(job_id)
            if finished(job):
                return job
            time.sleep(0.25)


# ----------------------------------------------------------------- helpers
def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """Turn SSE text lines into (event, data) pairs; comments and ids are skipped."""
    event, data = "message", []
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                event = value
            elif key == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    message = response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            message = text[:500]
    else:
        detail = body.get("detail", body.get("error")) if isinstance(body, dict) else body
        if isinstance(detail, str):
            message = detail
        elif isinstance(detail, list):  # FastAPI validation errors
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
                else:
                    parts.append(str(item))
            message = "; ".join(parts)
        elif detail is not None:
            message = json.dumps(detail)
    raise EngineHTTPError(response.status_code, message)


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
