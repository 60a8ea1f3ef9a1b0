"""Who may talk to the engine and how much they may send, decided before any body is read.

One ASGI middleware wraps every route (ours, the upstream-compatible ones, and any added later):

1. **Host.** The `Host` header must name this engine: `localhost`, `127.0.0.1`, `[::1]`, the bound
   address, or a name given with `--allow-host`. A web page that re-points its own domain at
   127.0.0.1 (DNS rebinding) still sends its own domain as `Host`, so it is refused.
2. **Origin.** A browser names the page that makes a request in `Origin`. Pages served by this
   machine (`http://localhost:*`, `http://127.0.0.1:*`: the engine's /docs, ACE-Step-DAW's dev
   server proxying to the engine) and the `--allow-origin` list may call it; pages from anywhere
   else are refused. (Reading answers from a page still needs CORS, i.e. `--allow-origin`.)
3. **Token.** With `--token`, `Authorization: Bearer TOKEN` is checked here, before the body. The two
   upstream routes that also take `ai_token` in the body may read at most a small body without it.
4. **Not a simple request.** A page can POST `text/plain`, a form or multipart to any address
   without asking the browser first. On an engine without a token, a POST that is not from one
   of the pages above must therefore carry a JSON content type or the `X-ACE-Companion` header
   (which `engine.client.EngineClient` sends);
   browsers ask first (CORS preflight) before sending either, and the engine says no unless
   `--allow-origin` lets the page in. PUT and DELETE are never simple, so browsers always ask.
5. **Size.** A `Content-Length` over the route's limit is a 413 at once; a body without one is
   counted while it streams and cut off at the limit with the same 413.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CLIENT_HEADER = "X-ACE-Companion"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
JSON_BODY_LIMIT = 16 * 1024 * 1024
UNAUTHENTICATED_BODY_LIMIT = 1024 * 1024
FORM_OVERHEAD = 1024 * 1024
# Paths where an upstream client may send its key as `ai_token` in the body instead of a header.
BODY_TOKEN_PATHS = ("/release_task", "/query_result")
_STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
_UPLOAD_TYPES = ("multipart/form-data", "application/octet-stream")


@dataclass
class GuardSettings:
    """What the guard allows. `max_upload_bytes` is per file; a form may carry two."""

    token: str | None = None
    allowed_hosts: set[str] = field(default_factory=lambda: set(LOOPBACK_HOSTS))
    allowed_origins: tuple[str, ...] = ()
    max_upload_bytes: int = 512 * 1024 * 1024
    any_host: bool = False


def host_name(value: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1', 'Example.COM' -> 'example.com'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value  # a bare IPv6 address or a plain name


def allowed_host_set(bound_host: str | None = None, extra: list[str] | tuple[str, ...] = ()) -> tuple[set[str], bool]:
    """The names the engine answers to, and whether any name is fine (`--allow-host '*'`)."""
    hosts = set(LOOPBACK_HOSTS)
    if bound_host and bound_host not in ("0.0.0.0", "::", ""):
        hosts.add(host_name(bound_host))
    elif bound_host in ("0.0.0.0", "::"):
        hosts |= _own_names()
    any_host = False
    for name in extra:
        if name.strip() == "*":
            any_host = True
        elif name.strip():
            hosts.add(host_name(name))
    return hosts, any_host


def _own_names() -> set[str]:
    """This machine's name and addresses, for an engine listening on every interface."""
    import socket

    names: set[str] = set()
    try:
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn().lower(), f"{hostname.lower()}.local"}
        for info in socket.getaddrinfo(hostname, None):
            names.add(str(info[4][0]).lower())
    except OSError:
        pass
    return names


class BodyTooLarge(Exception):
    """Raised from `receive` when a streamed body passes its limit."""


class Guard:
    """The ASGI middleware; reads its settings from `app.state.guard` on every request."""

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "websocket":  # the engine has no WebSocket routes
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: GuardSettings = scope["app"].state.guard
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = _refusal(scope, headers, settings)
        if refusal is not None:
            status, detail, field_name, extra = refusal
            await _answer(send, status, detail, field_name, extra)
            return
        limit = _body_limit(scope, headers, settings)
        length = _content_length(headers)
        if length is not None and length > limit:
            await _answer(send, 413, f"body too large: {length} bytes (limit {limit} bytes for this "
                                     f"request)", _size_field(headers), {})
            return
        await self._call_limited(scope, receive, send, limit, headers)

    async def _call_limited(self, scope: dict, receive: Callable, send: Callable, limit: int,
                            headers: dict[str, str]) -> None:
        received = 0
        exceeded = False
        answered = False

        async def limited_receive() -> dict:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal answered
            if exceeded:  # whatever the route made of the cut-off body, the answer is 413
                if message["type"] == "http.response.start" and not answered:
                    answered = True
                    await _answer(send, 413, f"body too large: over {limit} bytes for this request",
                                  _size_field(headers), {})
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            pass
        if exceeded and not answered:
            await _answer(send, 413, f"body too large: over {limit} bytes for this request",
                          _size_field(headers), {})


def _refusal(scope: dict, headers: dict[str, str], settings: GuardSettings) -> tuple[int, str, str | None, dict] | None:
    host_header = headers.get("host", "")
    host = host_name(host_header)
    if not settings.any_host and host not in settings.allowed_hosts:
        shown = host_header or "(none)"
        return (403, f"Host '{shown}' is not a name of this engine; if you reach it under that name on "
                     f"purpose, start it with --allow-host {host or 'NAME'}", "host", {})
    origin = headers.get("origin")
    trusted_page = origin is not None and (origin in settings.allowed_origins or "*" in settings.allowed_origins
                                           or _same_origin(origin, host_header) or _loopback_origin(origin))
    if origin is not None and not trusted_page:
        return (403, f"requests from the web page at {origin} are refused; start the engine with "
                     f"--allow-origin {origin} to let that page use it", "origin", {})
    method = scope.get("method", "GET").upper()
    scope.setdefault("state", {})["authorized"] = True
    if settings.token and method != "OPTIONS":
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), settings.token.encode())
        if not ok:
            if scope.get("path") in BODY_TOKEN_PATHS:
                scope["state"]["authorized"] = False  # the route may still accept `ai_token` in a small body
            else:
                return (401, "missing or wrong token: send 'Authorization: Bearer TOKEN'", None,
                        {"WWW-Authenticate": "Bearer"})
    if not scope["state"]["authorized"]:
        length = _content_length(headers)
        if length is not None and length > UNAUTHENTICATED_BODY_LIMIT:
            return (401, "missing or wrong token: send 'Authorization: Bearer TOKEN' (ai_token in the body "
                         f"is read only from bodies up to {UNAUTHENTICATED_BODY_LIMIT} bytes)", None,
                    {"WWW-Authenticate": "Bearer"})
    if (method == "POST" and not settings.token and not trusted_page and not _is_json(headers)
            and CLIENT_HEADER.lower() not in headers):
        shown = headers.get("content-type") or "no content type"
        return (415, f"a POST with {shown} needs the header '{CLIENT_HEADER}: 1' (or send "
                     f"application/json); this keeps web pages from submitting to the engine", "content-type", {})
    return None


def _content_length(headers: dict[str, str]) -> int | None:
    text = headers.get("content-length", "").strip()
    if not text.isdigit():
        return None
    return int(text) if len(text) <= 18 else 10 ** 18  # no 5,000-digit int() on a header


def _loopback_origin(origin: str) -> bool:
    """A page served by this machine (http://localhost:5174, a dev server proxying to the engine)."""
    try:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_HOSTS
    except ValueError:
        return False


def _same_origin(origin: str, host_header: str) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host_header) and parts.netloc.lower() == host_header.lower()


def _is_json(headers: dict[str, str]) -> bool:
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _body_limit(scope: dict, headers: dict[str, str], settings: GuardSettings) -> int:
    if not scope.get("state", {}).get("authorized", True):
        return UNAUTHENTICATED_BODY_LIMIT
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in _UPLOAD_TYPES or kind == "application/x-www-form-urlencoded":
        return 2 * settings.max_upload_bytes + FORM_OVERHEAD
    if scope.get("method", "GET").upper() in _STATE_CHANGING:
        return JSON_BODY_LIMIT
    return UNAUTHENTICATED_BODY_LIMIT  # GET and friends carry no body worth the name


def _size_field(headers: dict[str, str]) -> str:
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    return "file" if kind in _UPLOAD_TYPES else "body"


async def _answer(send: Callable, status: int, detail: str, field_name: str | None, extra: dict[str, Any]) -> None:
    body = json.dumps({"detail": detail, "field": field_name}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
