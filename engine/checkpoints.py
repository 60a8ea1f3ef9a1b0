"""Checkpoint layout, validation and strict loading.

The published ACE-Step 1.5 folders are used unchanged. No `.py` file from a checkpoint
folder is ever imported or written. Every problem becomes a one-line `CheckpointError`
that names the file and says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.types import CheckpointError

ENV_ROOT = "ACE_COMPANION_CHECKPOINTS"

DIT_MODELS = (
    "acestep-v15-turbo",
    "acestep-v15-turbo-shift1",
    "acestep-v15-turbo-shift3",
    "acestep-v15-turbo-continuous",
    "acestep-v15-sft",
    "acestep-v15-base",
)
LM_MODELS = ("acestep-5Hz-lm-0.6B", "acestep-5Hz-lm-1.7B", "acestep-5Hz-lm-4B")
VAE_DIR = "vae"
TEXT_ENCODER_DIR = "Qwen3-Embedding-0.6B"

# Files each kind of folder must hold.
REQUIRED_FILES = {
    "dit": ("config.json", "model.safetensors", "silence_latent.pt"),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "text_encoder": ("config.json", "model.safetensors", "tokenizer.json"),
    "lm": ("config.json", "model.safetensors", "tokenizer.json"),
}


def resolve_root(path: str | os.PathLike | None = None) -> Path:
    """`--checkpoints DIR`, else $ACE_COMPANION_CHECKPOINTS, else ./checkpoints."""
    if path:
        return Path(path).expanduser().resolve()
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / "checkpoints").resolve()


def lm_folder_name(size_or_name: str) -> str:
    """'0.6B' -> 'acestep-5Hz-lm-0.6B'; full names pass through."""
    if size_or_name in LM_MODELS:
        return size_or_name
    name = f"acestep-5Hz-lm-{size_or_name}"
    if name not in LM_MODELS:
        raise CheckpointError(f"unknown LM '{size_or_name}': choose one of 0.6B, 1.7B, 4B")
    return name


def validate_folder(folder: str | os.PathLike, kind: str) -> Path:
    """Check that a checkpoint folder exists and holds the files its kind needs."""
    folder = Path(folder)
    if kind not in REQUIRED_FILES:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found; run `ace-companion download` "
                              f"or pass --checkpoints DIR")
    for name in REQUIRED_FILES[kind]:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing file; re-run `ace-companion download` for this model")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: empty file; delete it and re-run `ace-companion download`")
    return folder


def load_safetensors_checked(path: str | os.PathLike, module, prefix: str = "") -> None:
    """Load a safetensors file into `module` strictly (same keys, same shapes).

    Keys missing from the file, keys the module does not have, and shape mismatches
    each raise a one-line `CheckpointError` naming the file and the first offending key.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing file; re-run `ace-companion download`") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({exc}); "
                              f"delete it and re-run `ace-companion download`") from None
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"{path}: missing key '{missing[0]}' ({len(missing)} missing); "
                              f"this file is not the model the folder name says")
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected); "
                              f"this file is not the model the folder name says")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{path}: key '{key}' has shape {tuple(tensor.shape)}, the model expects "
                                  f"{tuple(expected[key].shape)}; the config.json and weights do not match")
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
