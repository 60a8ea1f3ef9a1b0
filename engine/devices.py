"""Where the models run: one resolver for device and dtype, used by the DiT pipeline and the LM."""

from __future__ import annotations

import torch

from engine.types import EngineError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device=None) -> torch.device:
    """None -> cuda when torch sees one, else cpu. Asking for CUDA without one is an `EngineError`."""
    if device is None or device == "":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError("device: CUDA was requested but torch sees no CUDA device")
    return device


def resolve_dtype(device: torch.device, dtype=None) -> torch.dtype:
    """None -> bf16 on CUDA, fp32 elsewhere; names such as 'bf16' or 'float32' are accepted."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise EngineError(f"dtype: '{dtype}' is not one of float32, bfloat16, float16")
    return DTYPES[dtype]


def resolve_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    device = resolve_device(device)
    return device, resolve_dtype(device, dtype)
