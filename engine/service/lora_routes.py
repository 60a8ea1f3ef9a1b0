"""LoRA routes: upstream ACE-Step 1.5's `/v1/lora/*` (with its envelope) and our own `/v1/loras`.

Upstream's routes, so that its clients (the acestep.vst3 LoRA panel, which polls
`GET /v1/lora/status` every 7 s) work unchanged:

- `POST /v1/lora/load`    `{"lora_path": "<folder name or path>", "adapter_name"?: str}` (a path must lie
                          in checkpoints/loras or an `--allow-path` folder)
- `POST /v1/lora/unload`  removes every adapter, back to the plain DiT
- `POST /v1/lora/toggle`  `{"use_lora": bool}`
- `POST /v1/lora/scale`   `{"scale": 0..1, "adapter_name"?: str}`
- `GET  /v1/lora/status`  `{"lora_loaded", "use_lora", "lora_scale", "adapter_type", "scales",
                            "active_adapter", "adapters", "synthetic_default_mode"}`

Answers are wrapped as `{"data", "code", "error", "timestamp", "extra"}`. As upstream, a failed
load/unload is an HTTP 400 (with `error`, and our `detail`); a failed toggle/scale is HTTP 200 with
`code` 400 and `error`.

Ours (errors as `{"detail", "field"}` like the rest of the engine API):

- `GET    /v1/loras`          adapters on disk, loaded ones, the default and its scale
- `PUT    /v1/loras/default`  `{"name": str|null, "scale"?: 0..1, "enabled"?: bool}`
- `DELETE /v1/loras/{name}`   forget one adapter (`DELETE /v1/loras` forgets all)

The "default" adapter is what jobs without a `lora` field use; a job's own `lora` /
`lora_scale` fields override it for that job only. Nothing here reloads the DiT.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from engine.lora import LoraError, LoraSet
from engine.service.core import EngineService
from engine.service.http_common import HTTPProblem
from engine.service.upstream import envelope as wrap
from engine.service.upstream import refusal

OK = "\u2705"  # upstream prefixes success messages with this mark; some clients test for it


class UpstreamLoad(BaseModel):
    lora_path: str = Field(..., description="adapter folder name under checkpoints/loras/, or a folder path")
    adapter_name: str | None = None


class UpstreamScale(BaseModel):
    scale: float = Field(..., ge=0.0, le=1.0)
    adapter_name: str | None = None


class UpstreamToggle(BaseModel):
    use_lora: bool


class DefaultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(..., description="adapter folder under checkpoints/loras/, or null for none")
    scale: float | None = Field(None, ge=0.0, le=1.0)
    enabled: bool | None = None


def _loras(service: EngineService) -> LoraSet:
    """The pipeline's adapters; a pipeline without them (a stand-in) gets bookkeeping only."""
    loras = getattr(service.pipeline, "loras", None)
    if loras is None:
        loras = getattr(service, "_lora_bookkeeping", None)
        if loras is None:
            loras = service._lora_bookkeeping = LoraSet(service.info().get("checkpoints") or ".")
    return loras


def _adapter_source(service: EngineService, loras: LoraSet, value: str) -> tuple[str, bool]:
    """(what to load, whether it is a path) for an HTTP `lora_path`: a folder name under
    checkpoints/loras, or an absolute path inside checkpoints/loras or an --allow-path folder.
    Anything else is refused without saying whether it exists (as for audio inputs)."""
    text = value.strip()
    if text and "/" not in text and "\\" not in text and not text.startswith("."):
        return text, False
    real = Path(os.path.realpath(text)) if os.path.isabs(text) and "\0" not in text else None
    roots = [Path(os.path.realpath(loras.folder))] + list(getattr(service, "allowed_roots", []))
    if real is None or not any(real == root or root in real.parents for root in roots):
        raise LoraError(f"lora: '{text[:200]}' is not an adapter name in checkpoints/loras/ nor an absolute path "
                        f"inside it or an --allow-path folder")
    return str(real), True


def _decoder(service: EngineService):
    dit = getattr(service.pipeline, "dit", None)
    return getattr(dit, "decoder", None)


def upstream_status(loras: LoraSet) -> dict:
    status = loras.status()
    default = status["default"]
    return {
        "lora_loaded": bool(status["loaded"]),
        "use_lora": bool(default and status["enabled"]),
        "lora_scale": status["scale"],
        "adapter_type": "lora" if status["loaded"] else None,
        "scales": status["scales"],
        "active_adapter": default,
        "adapters": status["loaded"],
        "synthetic_default_mode": False,
        # ours: what the last job ran with (a job may name its own adapter)
        "last_used": status["last_used"],
    }


def add_lora_routes(app: FastAPI, service: EngineService) -> None:
    # -------------------------------------------------------------- upstream
    @app.post("/v1/lora/load", summary="Upstream ACE-Step 1.5: load a LoRA adapter", tags=["upstream"])
    def upstream_load(body: UpstreamLoad):
        loras = _loras(service)
        try:
            source, is_path = _adapter_source(service, loras, body.lora_path)
            adapter = loras.load(source, body.adapter_name, decoder=_decoder(service), allow_path=is_path)
            loras.set_default(adapter.name, 1.0)
        except LoraError as exc:
            return refusal(400, str(exc), "lora_path")
        data = {"message": f"{OK} LoRA '{adapter.name}' loaded from {adapter.folder}", "lora_path": body.lora_path}
        if body.adapter_name:
            data["adapter_name"] = adapter.name
        return wrap(data)

    @app.post("/v1/lora/unload", summary="Upstream ACE-Step 1.5: unload every LoRA adapter", tags=["upstream"])
    def upstream_unload():
        loras = _loras(service)
        if not loras.loaded():
            return refusal(400, "no LoRA adapter loaded")
        removed = loras.unload()
        return wrap({"message": f"{OK} unloaded {', '.join(removed)}; the DiT runs without an adapter"})

    @app.post("/v1/lora/toggle", summary="Upstream ACE-Step 1.5: use the loaded adapter or not", tags=["upstream"])
    def upstream_toggle(body: UpstreamToggle) -> dict:
        try:
            _loras(service).set_enabled(body.use_lora)
        except LoraError as exc:
            return wrap(None, 400, str(exc))
        return wrap({"message": f"{OK} LoRA {'enabled' if body.use_lora else 'disabled'}", "use_lora": body.use_lora})

    @app.post("/v1/lora/scale", summary="Upstream ACE-Step 1.5: set the adapter's strength", tags=["upstream"])
    def upstream_scale(body: UpstreamScale) -> dict:
        try:
            name = _loras(service).set_scale(body.scale, (body.adapter_name or "").strip() or None)
        except LoraError as exc:
            return wrap(None, 400, str(exc))
        data = {"message": f"{OK} LoRA '{name}' scale set to {body.scale:g}", "scale": body.scale}
        if body.adapter_name:
            data["adapter_name"] = name
        return wrap(data)

    @app.get("/v1/lora/status", summary="Upstream ACE-Step 1.5: LoRA state", tags=["upstream"])
    def upstream_status_route() -> dict:
        return wrap(upstream_status(_loras(service)))

    # -------------------------------------------------------------- ours
    @app.get("/v1/loras", summary="LoRA adapters: on disk, loaded, default and scales")
    def list_loras() -> dict:
        return _loras(service).status()

    @app.put("/v1/loras/default", summary="Set the adapter jobs use when they name none (null = none)")
    def set_default(body: DefaultBody) -> dict:
        loras = _loras(service)
        try:
            if body.name is None:
                loras.set_default(None)
            else:
                if body.name not in loras.loaded():
                    loras.load(body.name, decoder=_decoder(service), allow_path=False)
                loras.set_default(body.name, body.scale)
            if body.enabled is not None:
                loras.set_enabled(body.enabled)
        except LoraError as exc:
            raise HTTPProblem(422, str(exc), "name") from None
        return loras.status()

    @app.delete("/v1/loras/{name}", summary="Forget one loaded adapter")
    def unload_one(name: str) -> dict:
        loras = _loras(service)
        try:
            loras.unload(name)
        except LoraError as exc:
            raise HTTPProblem(404, str(exc), "name") from None
        return loras.status()

    @app.delete("/v1/loras", summary="Forget every loaded adapter")
    def unload_all() -> dict:
        loras = _loras(service)
        loras.unload()
        return loras.status()
