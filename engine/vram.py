"""GPU memory budget: keep only the DiT resident when everything does not fit.

The XL DiT alone is about 10 GB in bf16 (the 2B one 4.8 GB); next to it the engine holds the
text encoder (1.2 GB), the VAE (0.3 GB) and optionally a 5 Hz LM (1.2-8 GB). When `--low-vram`
is given, or the GPU's memory is smaller than all of that plus a working margin, the text
encoder, the VAE and the LM stay in CPU memory and move to the GPU only for the stage that
uses them (caption encoding, audio encode/decode, planning), then move back. The DiT stays on
the GPU. The plan is reported in `/health` under `vram`.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import asdict, dataclass

import torch

GIB = 2 ** 30
# Activations, the cross-attention cache and CUDA's own overhead for a few minutes of audio
# (upstream budgets 0.3-1.0 GB per 60 s and batch item, plus 0.5 GB).
WORKING_MARGIN_BYTES = 3 * GIB


def module_bytes(module) -> int:
    """Bytes of a module's parameters and buffers (0 for None)."""
    if module is None:
        return 0
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class VramPlan:
    offload: bool  # text encoder, VAE and LM live on the CPU between their stages
    reason: str
    gpu_total_mib: float | None = None
    resident_mib: float | None = None  # everything loaded, as if kept on the GPU

    def to_dict(self) -> dict:
        return asdict(self)


def plan_vram(device: torch.device, low_vram: bool | None, parts_bytes: int) -> VramPlan:
    """Decide whether to offload: forced by `low_vram` True/False, else when `parts_bytes` plus the
    working margin exceed the GPU's memory. CPU runs never offload."""
    if device.type != "cuda":
        return VramPlan(False, "cpu: nothing to offload")
    total = torch.cuda.get_device_properties(device).total_memory
    needed = parts_bytes + WORKING_MARGIN_BYTES
    sizes = dict(gpu_total_mib=round(total / 2 ** 20, 1), resident_mib=round(parts_bytes / 2 ** 20, 1))
    if low_vram:
        return VramPlan(True, "--low-vram", **sizes)
    if low_vram is None and needed > total:
        return VramPlan(True, f"the models need about {needed / GIB:.1f} GiB with working memory, the GPU has "
                              f"{total / GIB:.1f} GiB", **sizes)
    return VramPlan(False, "everything fits on the GPU" if needed <= total else "offload switched off", **sizes)


# The methods that run each part's network (the others, e.g. tokenize, need no GPU).
STAGE_METHODS = {
    "TextEncoder": ("encode_captions", "embed_lyrics"),
    "VAE": ("encode", "decode"),
    "Planner": ("plan", "format_caption", "simple_mode", "understand_codes"),
}


class Offloaded:
    """Stands in for `owner` (a TextEncoder, VAE or Planner) whose `module` lives on the CPU:
    a call of one of its stage methods moves the module to `device` first and back to the CPU after."""

    def __init__(self, owner, module: torch.nn.Module, device: torch.device):
        self._owner = owner
        self._methods = STAGE_METHODS.get(type(owner).__name__, ())
        self._module = module.to("cpu")
        self._device = device
        self._depth = 0
        self._lock = threading.Lock()

    @property
    def wrapped(self):
        return self._owner

    def __getattr__(self, name: str):
        value = getattr(self._owner, name)
        if name not in self._methods:
            return value

        @functools.wraps(value)
        def on_device(*args, **kwargs):
            with self._lock:
                if self._depth == 0:
                    self._module.to(self._device)
                self._depth += 1
            try:
                return value(*args, **kwargs)
            finally:
                with self._lock:
                    self._depth -= 1
                    if self._depth == 0:
                        self._module.to("cpu")
                        if self._device.type == "cuda":
                            torch.cuda.empty_cache()
        return on_device
