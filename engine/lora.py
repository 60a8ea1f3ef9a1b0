"""LoRA adapters on the DiT, in upstream ACE-Step 1.5's PEFT format.

An adapter is a folder `checkpoints/loras/<name>/` holding `adapter_config.json` (a PEFT
`LoraConfig`) and `adapter_model.safetensors` (tensors named
`base_model.model.layers.N.{self_attn|cross_attn}.{q,k,v,o}_proj.lora_{A,B}.weight`, relative to
the DiT module), which is what upstream's trainer writes; a diffusers `pytorch_lora_weights.safetensors`
is read too. Adapters are injected with the `peft`
library into the loaded DiT's linear layers and stay unmerged, like upstream: each wrapped linear
computes `W x + scale * (alpha / r) * B(A(x))`, so changing the adapter or its scale never
touches (or reloads) the base weights.

`LoraSet` is the engine's LoRA state: which adapters are read into memory, the default one that
requests without a `lora` field get (what upstream's `/v1/lora/*` routes set), per-adapter
scales, and which adapters are injected into the current DiT. Routes only change the
bookkeeping; the worker thread applies it to the DiT at the start of each job (`activate`).
"""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

from engine.checkpoints import safetensors_header
from engine.types import CheckpointError, EngineError

LORAS_DIR = "loras"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
# diffusers' AceStepTransformer1DModel names for the same attention linears
_DIFFUSERS_NAMES = ((".to_q.", ".q_proj."), (".to_k.", ".k_proj."), (".to_v.", ".v_proj."),
                    (".to_out.0.", ".o_proj."))
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")
_PREFIXES = ("base_model.model.", "decoder.")


class LoraError(EngineError):
    """An adapter cannot be read, does not fit the loaded DiT, or is not known."""


@dataclass
class LoraAdapter:
    """One adapter read from disk: its PEFT config and per-module (A, B) weights (CPU tensors)."""

    name: str
    folder: Path
    config: dict
    weights: dict[str, tuple]  # module path inside the DiT -> (lora_A [r, in], lora_B [out, r])

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 8))

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha", self.rank))


def list_adapters(root: str | os.PathLike) -> list[str]:
    """Names of the adapter folders under `<checkpoints root>/loras` (PEFT or diffusers files inside)."""
    folder = Path(root) / LORAS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if (p / CONFIG_FILE).is_file() or (p / DIFFUSERS_FILE).is_file())


def read_adapter(folder: str | os.PathLike, name: str | None = None) -> LoraAdapter:
    """Read and check an adapter folder; one-line `LoraError`s.

    PEFT format (upstream's trainer): adapter_config.json + adapter_model.safetensors. Also the
    diffusers format (`pipe.save_lora_weights`): pytorch_lora_weights.safetensors with keys
    `transformer.layers.N.{self_attn|cross_attn}.{to_q,to_k,to_v,to_out.0}.lora_{A,B}.weight`, which
    name the same linears; its rank/alpha come from the file's metadata (alpha = rank without).
    """
    folder = Path(folder)
    name = name or folder.name
    config_path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise LoraError(f"lora: adapter folder {folder} not found (adapters live in checkpoints/{LORAS_DIR}/<name>/)")
    if not config_path.is_file():
        if (folder / DIFFUSERS_FILE).is_file():
            return _read_diffusers(folder, name)
        if any(folder.glob("*.safetensors")):
            raise LoraError(f"lora: {folder} has no {CONFIG_FILE}; supported are PEFT LoRA folders "
                            f"(adapter_config.json + {WEIGHTS_FILE}, as upstream's trainer writes them) and "
                            f"diffusers' {DIFFUSERS_FILE}")
        raise LoraError(f"lora: {config_path}: missing file")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoraError(f"lora: {config_path}: unreadable ({exc})") from None
    if not isinstance(config, dict):
        raise LoraError(f"lora: {config_path}: not a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise LoraError(f"lora: {config_path}: peft_type {config.get('peft_type')!r} is not supported (LORA only)")
    if config.get("use_dora"):
        raise LoraError(f"lora: {config_path}: DoRA adapters are not supported")
    if not isinstance(config.get("r"), int) or config["r"] <= 0:
        raise LoraError(f"lora: {config_path}: 'r' must be a positive integer")
    state, _ = _load_weights(folder / WEIGHTS_FILE)
    return LoraAdapter(name=name, folder=folder, config=config, weights=_pairs(state, folder / WEIGHTS_FILE))


def _read_diffusers(folder: Path, name: str) -> LoraAdapter:
    path = folder / DIFFUSERS_FILE
    state, metadata = _load_weights(path)
    renamed = {}
    for key, tensor in state.items():
        if not key.startswith("transformer."):
            raise LoraError(f"lora: {path}: tensor '{key}' is not for the transformer (DiT); only DiT LoRAs "
                            f"are supported")
        for old, new in _DIFFUSERS_NAMES:
            key = key.replace(old, new)
        renamed[key[len("transformer."):]] = tensor
    weights = _pairs(renamed, path)
    ranks = {a.shape[0] for a, _ in weights.values()}
    try:
        packed = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    except json.JSONDecodeError:
        packed = {}
    rank = int(packed.get("transformer.r") or packed.get("r") or max(ranks))
    alpha = float(packed.get("transformer.lora_alpha") or packed.get("lora_alpha") or rank)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "format": "diffusers",
              "use_rslora": bool(packed.get("transformer.use_rslora") or packed.get("use_rslora")),
              "rank_pattern": {m: a.shape[0] for m, (a, _) in weights.items() if a.shape[0] != rank}}
    return LoraAdapter(name=name, folder=folder, config=config, weights=weights)


def _load_weights(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file, with one-line errors."""
    from safetensors import safe_open

    if not path.is_file():
        raise LoraError(f"lora: {path}: missing file")
    try:
        safetensors_header(path)  # a cut-off or foreign file, without reading the tensors
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except (CheckpointError, OSError, ValueError) as exc:
        reason = str(exc).split(": ", 1)[-1].split(";")[0]
        raise LoraError(f"lora: {path}: {reason}; copy the adapter again") from None


def _pairs(state: dict, path: Path) -> dict[str, tuple]:
    """module path inside the DiT -> (lora_A, lora_B), checked."""
    pairs: dict[str, dict] = {}
    for key, tensor in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        match = _KEY.match(key)
        if match is None:
            raise LoraError(f"lora: {path}: unexpected tensor '{key}' (expected "
                            f"<module>.lora_A.weight / <module>.lora_B.weight)")
        pairs.setdefault(match["module"], {})[match["which"]] = tensor
    if not pairs:
        raise LoraError(f"lora: {path}: holds no LoRA tensors")
    weights = {}
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise LoraError(f"lora: {path}: '{module}' lacks lora_{'B' if 'A' in pair else 'A'}")
        a, b = pair["A"], pair["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise LoraError(f"lora: {path}: '{module}' has inconsistent shapes {tuple(a.shape)} / "
                            f"{tuple(b.shape)}")
        weights[module] = (a, b)
    return weights


def _peft_name(name: str) -> str:
    """PEFT keeps adapters in ModuleDicts, whose keys cannot contain dots."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _lora_layers(decoder):
    from peft.tuners.lora import LoraLayer

    return [(path, module) for path, module in decoder.named_modules() if isinstance(module, LoraLayer)]


def _base_linear(decoder, path: str):
    """The plain nn.Linear at `path` in the DiT (unwrapping a PEFT layer), or None."""
    try:
        module = decoder.get_submodule(path)
    except AttributeError:
        return None
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    return base if hasattr(base, "in_features") and hasattr(base, "out_features") else None


def check_fits(adapter: LoraAdapter, decoder) -> None:
    """Every adapter module exists in the DiT as a linear layer of matching size."""
    for path, (a, b) in adapter.weights.items():
        linear = _base_linear(decoder, path)
        if linear is None:
            raise LoraError(f"lora: adapter '{adapter.name}' targets '{path}', which this DiT does not have "
                            f"(trained for {adapter.config.get('base_model_name_or_path') or 'another model'})")
        if a.shape[1] != linear.in_features or b.shape[0] != linear.out_features:
            raise LoraError(f"lora: adapter '{adapter.name}' does not fit the loaded DiT: '{path}' is "
                            f"{linear.in_features}->{linear.out_features}, the adapter has "
                            f"{a.shape[1]}->{b.shape[0]} (trained for "
                            f"{adapter.config.get('base_model_name_or_path') or 'another DiT'})")


def _inject(adapter: LoraAdapter, decoder) -> None:
    """Wrap exactly the adapter's modules with PEFT LoRA layers and copy its weights in."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    check_fits(adapter, decoder)
    key = _peft_name(adapter.name)
    c = adapter.config
    config = LoraConfig(
        r=adapter.rank, lora_alpha=adapter.alpha, lora_dropout=0.0, bias="none",
        use_rslora=bool(c.get("use_rslora", False)),
        rank_pattern=c.get("rank_pattern") or {}, alpha_pattern=c.get("alpha_pattern") or {},
        # a string is a full-match regex over module paths: wrap exactly the adapter's modules
        target_modules="|".join(re.escape(path) for path in adapter.weights),
    )
    try:
        with warnings.catch_warnings():  # a second adapter on the same DiT is intended here
            warnings.filterwarnings("ignore", message=".*peft_config.*")
            inject_adapter_in_model(config, decoder, adapter_name=key)
    except (ValueError, TypeError, KeyError) as exc:
        raise LoraError(f"lora: cannot attach adapter '{adapter.name}' ({exc})") from None
    with torch.no_grad():
        for path, (a, b) in adapter.weights.items():
            layer = decoder.get_submodule(path)
            target_a, target_b = layer.lora_A[key].weight, layer.lora_B[key].weight
            if tuple(target_a.shape) != tuple(a.shape) or tuple(target_b.shape) != tuple(b.shape):
                raise LoraError(f"lora: adapter '{adapter.name}': '{path}' rank does not match its config "
                                f"(r={adapter.rank})")
            target_a.copy_(a)
            target_b.copy_(b)
    decoder.eval().requires_grad_(False)


def _strip_all(decoder) -> None:
    """Put the plain nn.Linear layers back where PEFT wrapped them."""
    for path, module in _lora_layers(decoder):
        parent_path, _, child = path.rpartition(".")
        parent = decoder.get_submodule(parent_path) if parent_path else decoder
        setattr(parent, child, module.get_base_layer())
    if hasattr(decoder, "peft_config"):
        del decoder.peft_config


class LoraSet:
    """Adapters known to the engine and their use on the loaded DiT (thread-safe bookkeeping)."""

    def __init__(self, checkpoints_root: str | os.PathLike):
        self.folder = Path(checkpoints_root) / LORAS_DIR
        self._lock = threading.RLock()
        self._adapters: dict[str, LoraAdapter] = {}
        self._scales: dict[str, float] = {}
        self.default: str | None = None  # used by requests without a `lora` field
        self.enabled = True  # upstream's use_lora toggle for the default adapter
        self.last_used: dict | None = None
        self._decoder_ref = None
        self._injected: set[str] = set()
        self._rebuild = False

    # ------------------------------------------------------------------ bookkeeping
    def available(self) -> list[str]:
        return list_adapters(self.folder.parent)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._adapters)

    def _locate(self, name_or_path: str, allow_path: bool = True) -> Path:
        text = str(name_or_path).strip()
        if not text:
            raise LoraError("lora: give an adapter folder name (under checkpoints/loras/) or a path")
        by_name = self.folder / text
        if "/" not in text and "\\" not in text and not text.startswith(".") and by_name.is_dir():
            return by_name
        path = Path(text).expanduser()
        if allow_path and path.is_dir():
            return path
        known = ", ".join(self.available()) or "none"
        raise LoraError(f"lora: no adapter '{text}' (adapters in {self.folder}: {known})")

    def load(self, name_or_path: str, adapter_name: str | None = None, decoder=None,
             allow_path: bool = True) -> LoraAdapter:
        """Read an adapter into memory (a folder name under checkpoints/loras, or a path when
        `allow_path`). With `decoder`, also check that it fits that DiT. Reading again replaces
        the cached copy."""
        folder = self._locate(name_or_path, allow_path)
        name = (adapter_name or "").strip() or folder.name
        adapter = read_adapter(folder, name)
        if decoder is not None:
            check_fits(adapter, decoder)
        with self._lock:
            self._adapters[name] = adapter
            self._scales.setdefault(name, 1.0)
            if name in self._injected:  # fresh weights: rebuild the DiT's LoRA layers on next use
                self._rebuild = True
        return adapter

    def _ensure(self, name: str) -> LoraAdapter:
        with self._lock:
            if name in self._adapters:
                return self._adapters[name]
        return self.load(name, allow_path=False)  # a request names folders under checkpoints/loras only

    def unload(self, name: str | None = None) -> list[str]:
        """Forget one adapter (or all); the DiT is restored on the next job. Returns the names removed."""
        with self._lock:
            names = list(self._adapters) if name is None else [name]
            for item in names:
                if item not in self._adapters:
                    raise LoraError(f"lora: adapter '{item}' is not loaded (loaded: "
                                    f"{', '.join(self._adapters) or 'none'})")
            for item in names:
                del self._adapters[item]
                self._scales.pop(item, None)
            if self.default in names:
                self.default = None
            return names

    def set_default(self, name: str | None, scale: float | None = None) -> None:
        with self._lock:
            if name is not None and name not in self._adapters:
                raise LoraError(f"lora: adapter '{name}' is not loaded")
            self.default = name
            self.enabled = True
            if name is not None and scale is not None:
                self._scales[name] = check_scale(scale)

    def set_scale(self, scale: float, name: str | None = None) -> str:
        with self._lock:
            name = name or self.default
            if name is None or name not in self._adapters:
                raise LoraError("lora: no adapter loaded" if name is None else f"lora: adapter '{name}' is not loaded")
            self._scales[name] = check_scale(scale)
            return name

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            if enabled and self.default is None:
                raise LoraError("lora: no adapter loaded; load one first")
            self.enabled = bool(enabled)

    def status(self) -> dict:
        with self._lock:
            return {
                "loaded": list(self._adapters), "default": self.default, "enabled": self.enabled,
                "scale": self._scales.get(self.default, 1.0) if self.default else 1.0,
                "scales": dict(self._scales), "last_used": self.last_used, "available": self.available(),
            }

    # ------------------------------------------------------------------ applying to the DiT
    def resolve(self, lora: str | None, lora_scale: float | None) -> tuple[str | None, float]:
        """Which adapter and scale a request gets: its own `lora` ("" = none), else the default."""
        with self._lock:
            if lora is None:
                name = self.default if self.enabled else None
            else:
                name = lora.strip() or None
            base = self._scales.get(name, 1.0) if name else 1.0
        if name is not None:
            self._ensure(name)
        return name, check_scale(base if lora_scale is None else lora_scale)

    def activate(self, decoder, lora: str | None, lora_scale: float | None) -> tuple[str | None, float]:
        """Make `decoder` run with the request's adapter at its scale (or none). Returns (name, scale).

        A request's own `lora` must fit the DiT (else `LoraError`); the engine's default adapter is
        skipped for DiTs it does not fit (e.g. a stems job on a base DiT while an XL adapter is set).

        Adapters stay injected once used, so switching between them or changing the scale only
        flips PEFT's active adapter and its scaling; the base weights are never touched.
        """
        name, scale = self.resolve(lora, lora_scale)
        if lora is None and name is not None:
            try:  # the engine's default adapter only applies to DiTs it was trained for
                check_fits(self._ensure(name), decoder)
            except LoraError:
                name = None
        with self._lock:
            if self._decoder_ref is None or self._decoder_ref() is not decoder:
                self._decoder_ref = weakref.ref(decoder)  # a new DiT: nothing injected yet
                self._injected = set()
                self._rebuild = False
            rebuild = self._rebuild or bool(self._injected - set(self._adapters))
            self._rebuild = False
            adapter = self._adapters.get(name) if name else None
        if not rebuild and adapter is None and not self._injected:
            decoder.lora_active = None  # plain DiT, nothing to switch off (and no `peft` import)
            with self._lock:
                self.last_used = None
            return None, scale
        if rebuild:
            _strip_all(decoder)
            with self._lock:
                self._injected = set()
        if adapter is not None and name not in self._injected:
            _inject(adapter, decoder)
            with self._lock:
                self._injected.add(name)
        for _, layer in _lora_layers(decoder):
            if name is None:
                layer.enable_adapters(False)
                continue
            key = _peft_name(name)
            layer.enable_adapters(key in layer.lora_A)
            if key in layer.lora_A:
                layer.set_adapter(key)
                layer.set_scale(key, scale)
        decoder.requires_grad_(False)  # PEFT's set_adapter marks the active adapter trainable
        decoder.lora_active = name  # fast paths that bypass the q/k/v/o modules must check this
        with self._lock:
            self.last_used = {"adapter": name, "scale": scale} if name else None
        return name, scale


def check_scale(scale) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise LoraError(f"lora_scale: expected a number from 0 to 1, got {scale!r}") from None
    if not 0.0 <= value <= 1.0:
        raise LoraError(f"lora_scale: {value} is outside 0-1")
    return value
