"""Checkpoint layout, validation and strict loading.

The published ACE-Step 1.5 folders are used unchanged. No `.py` file from a checkpoint
folder is ever imported, executed or written (real downloads may contain some; they are
ignored). Every problem becomes a one-line `CheckpointError` that names the file and says
what to do.

Layout under the checkpoints root (default ./checkpoints, or $ACE_COMPANION_CHECKPOINTS):

    acestep-v15-turbo/      DiT: config.json, model.safetensors, silence_latent.pt
    acestep-v15-*/          other DiT variants, same files
    acestep-v15-xl-*/       XL (4B) DiTs: config.json, model-0000N-of-0000M.safetensors shards +
                            model.safetensors.index.json, silence_latent.pt
    vae/                    config.json, diffusion_pytorch_model.safetensors
    Qwen3-Embedding-0.6B/   text encoder: config.json, model.safetensors, tokenizer files
    acestep-5Hz-lm-*/       5 Hz LM: config.json, model.safetensors (or shards + index), tokenizer files
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.types import CheckpointError

ENV_ROOT = "ACE_COMPANION_CHECKPOINTS"
# `make-tiny-checkpoints` leaves this file in every folder it writes: the weights are random.
TINY_MARKER = "ace-companion-tiny.json"
TINY_WARNING = "tiny random weights: output is noise"

DIT_MODELS = (
    "acestep-v15-turbo",
    "acestep-v15-turbo-shift1",
    "acestep-v15-turbo-shift3",
    "acestep-v15-turbo-continuous",
    "acestep-v15-sft",
    "acestep-v15-base",
    "acestep-v15-xl-turbo",
    "acestep-v15-xl-sft",
    "acestep-v15-xl-base",
)
XL_DIT_MODELS = tuple(name for name in DIT_MODELS if "-xl-" in name)  # 4B, sharded fp32 weights
LM_MODELS = ("acestep-5Hz-lm-0.6B", "acestep-5Hz-lm-1.7B", "acestep-5Hz-lm-4B")
VAE_DIR = "vae"
TEXT_ENCODER_DIR = "Qwen3-Embedding-0.6B"

# Files each kind of folder must hold. A `model.safetensors` may instead be sharded:
# `model.safetensors.index.json` plus the shard files it names (the 4B LM is published that way).
REQUIRED_FILES = {
    "dit": ("config.json", "model.safetensors", "silence_latent.pt"),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "text_encoder": ("config.json", "model.safetensors", "tokenizer.json"),
    "lm": ("config.json", "model.safetensors", "tokenizer.json"),
}
KINDS = tuple(REQUIRED_FILES)
WEIGHTS_FILE = {"dit": "model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                "text_encoder": "model.safetensors", "lm": "model.safetensors"}

# Files fetched for a folder of each kind (glob patterns relative to the folder). Never `*.py`.
DOWNLOAD_PATTERNS = {
    "dit": ("config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
            "silence_latent.pt"),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "text_encoder": ("*.json", "*.safetensors", "*.txt", "*.jinja"),
    "lm": ("*.json", "*.safetensors", "*.txt", "*.jinja"),
}

MAIN_REPO = "ACE-Step/Ace-Step1.5"
GB = 1_000_000_000
MB = 1_000_000


@dataclass(frozen=True)
class CheckpointSpec:
    """One published checkpoint folder.

    `repo_subfolder` is the folder's path inside `repo_id` ("" when the whole repo is the
    folder, as for the sub-model repos `ACE-Step/<name>`).
    """

    name: str
    kind: str
    repo_id: str
    repo_subfolder: str
    approx_size: int
    description: str

    @property
    def required_files(self) -> tuple[str, ...]:
        return REQUIRED_FILES[self.kind]

    def allow_patterns(self) -> list[str]:
        """huggingface_hub `allow_patterns` selecting exactly the files this folder needs."""
        prefix = f"{self.repo_subfolder}/" if self.repo_subfolder else ""
        return [prefix + pattern for pattern in DOWNLOAD_PATTERNS[self.kind]]


def _main(name: str, kind: str, size: int, description: str) -> CheckpointSpec:
    return CheckpointSpec(name, kind, MAIN_REPO, name, size, description)


def _sub(name: str, kind: str, size: int, description: str) -> CheckpointSpec:
    return CheckpointSpec(name, kind, f"ACE-Step/{name}", "", size, description)


# Every folder the engine can use. Sizes are approximate download sizes (bf16 weights).
REGISTRY: dict[str, CheckpointSpec] = {spec.name: spec for spec in (
    _main("acestep-v15-turbo", "dit", int(4.79 * GB), "DiT 2B turbo (8 steps, default)"),
    _main(VAE_DIR, "vae", int(0.34 * GB), "Oobleck VAE, 48 kHz stereo <-> 25 Hz latents"),
    _main(TEXT_ENCODER_DIR, "text_encoder", int(1.21 * GB), "Qwen3-Embedding-0.6B caption/lyric encoder"),
    _main("acestep-5Hz-lm-1.7B", "lm", int(3.76 * GB), "5 Hz LM planner 1.7B"),
    _sub("acestep-v15-turbo-shift1", "dit", int(4.79 * GB), "DiT 2B turbo, trained for shift 1"),
    _sub("acestep-v15-turbo-shift3", "dit", int(4.79 * GB), "DiT 2B turbo, trained for shift 3"),
    _sub("acestep-v15-turbo-continuous", "dit", int(4.79 * GB), "DiT 2B turbo, continuous shift"),
    _sub("acestep-v15-sft", "dit", int(4.79 * GB), "DiT 2B SFT (50 steps, CFG)"),
    _sub("acestep-v15-base", "dit", int(4.79 * GB), "DiT 2B base (50 steps, CFG; lego/extract/complete)"),
    _sub("acestep-5Hz-lm-0.6B", "lm", int(1.40 * GB), "5 Hz LM planner 0.6B"),
    _sub("acestep-5Hz-lm-4B", "lm", int(8.40 * GB), "5 Hz LM planner 4B (sharded weights)"),
    # XL repos hold fp32 weights in shards (about 9 GB in GPU memory once cast to bf16).
    _sub("acestep-v15-xl-turbo", "dit", int(19.9 * GB), "DiT XL 4B turbo (8 steps; sharded fp32)"),
    _sub("acestep-v15-xl-sft", "dit", int(19.9 * GB), "DiT XL 4B SFT (50 steps, CFG; sharded fp32)"),
    _sub("acestep-v15-xl-base", "dit", int(19.9 * GB), "DiT XL 4B base (50 steps, CFG; sharded fp32)"),
)}

# What `ace-companion download` fetches with no flag: enough to render with the turbo DiT.
CORE_SET = ("acestep-v15-turbo", VAE_DIR, TEXT_ENCODER_DIR)


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


def spec_for(name: str) -> CheckpointSpec:
    """Registry entry for a folder name (LM sizes like '1.7B' are accepted too)."""
    if name in REGISTRY:
        return REGISTRY[name]
    try:
        return REGISTRY[lm_folder_name(name)]
    except CheckpointError:
        pass
    raise CheckpointError(f"unknown checkpoint '{name}': choose one of {', '.join(REGISTRY)}")


# --------------------------------------------------------------------------------------------
# Cheap file checks (headers only; nothing large is read)


def read_config(folder: str | os.PathLike) -> dict:
    """Parse `folder/config.json`, or raise a one-line `CheckpointError`."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing file; re-run `ace-companion download` for this model")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable config.json ({reason}); delete it and re-run "
                              f"`ace-companion download`") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: config.json is not a JSON object; delete it and re-run "
                              f"`ace-companion download`")
    return config


def safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor names -> (dtype, shape) from a safetensors header, checked against the file size.

    Only the header is read. A file that is empty, cut short (an interrupted download) or
    not safetensors at all raises a one-line `CheckpointError` naming the file.
    """
    path = Path(path)
    redo = "delete it and re-run `ace-companion download`"
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: empty or truncated safetensors file ({size} bytes); {redo}")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise CheckpointError(f"{path}: truncated safetensors file (header says {header_len} bytes, "
                                      f"file has {size}); {redo}")
            raw = handle.read(header_len)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing file; re-run `ace-companion download` for this model") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc}); check file permissions") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
        data_end = 0
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            data_end = max(data_end, int(end))
            tensors[key] = (str(entry["dtype"]), tuple(int(d) for d in entry["shape"]))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file (bad header: {exc}); {redo}") from None
    expected = 8 + header_len + data_end
    if size < expected:
        raise CheckpointError(f"{path}: truncated safetensors file ({size} of {expected} bytes); {redo}")
    return tensors


def weight_files(folder: str | os.PathLike, kind: str) -> list[Path]:
    """The safetensors file(s) holding a folder's weights: the single file, or every shard
    named by `model.safetensors.index.json`."""
    folder = Path(folder)
    single = folder / WEIGHTS_FILE[kind]
    index = folder / (WEIGHTS_FILE[kind] + ".index.json")
    if single.is_file() or not index.is_file():
        return [single]
    return _shards_from_index(index)


def dit_weights_path(folder: str | os.PathLike) -> Path:
    """`model.safetensors`, or `model.safetensors.index.json` when the weights are sharded (XL)."""
    folder = Path(folder)
    single = folder / WEIGHTS_FILE["dit"]
    index = folder / (WEIGHTS_FILE["dit"] + ".index.json")
    return index if not single.is_file() and index.is_file() else single


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{index}: unreadable shard index; delete it and re-run "
                              f"`ace-companion download`") from None
    if not names:
        raise CheckpointError(f"{index}: shard index names no files; delete it and re-run "
                              f"`ace-companion download`")
    return [index.parent / name for name in names]


def _check_zip(path: Path) -> None:
    """`torch.save` writes a zip archive; a cut-short file has no central directory."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: truncated or not a torch.save file; delete it and re-run "
                              f"`ace-companion download`")


def _check_config_kind(folder: Path, kind: str, config: dict) -> None:
    path = folder / "config.json"
    if kind == "dit" and config.get("model_type") != "acestep":
        raise CheckpointError(f"{path}: model_type is {config.get('model_type')!r}, expected 'acestep' "
                              f"(an ACE-Step 1.5 DiT folder)")
    if kind == "vae" and config.get("_class_name", "AutoencoderOobleck") != "AutoencoderOobleck":
        raise CheckpointError(f"{path}: _class_name is {config.get('_class_name')!r}, expected "
                              f"'AutoencoderOobleck'")
    if kind in ("text_encoder", "lm") and config.get("model_type") != "qwen3":
        raise CheckpointError(f"{path}: model_type is {config.get('model_type')!r}, expected 'qwen3'")


def validate_folder(folder: str | os.PathLike, kind: str) -> Path:
    """Check that a checkpoint folder is complete and its files are intact (headers only).

    Checks: the folder exists; every required file is there and non-empty; config.json parses
    and names the right model type; every safetensors file's header fits the file size;
    silence_latent.pt is a complete archive. `.py` files are ignored.
    """
    folder = Path(folder)
    if kind not in REQUIRED_FILES:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found; run `ace-companion download` "
                              f"or pass --checkpoints DIR")
    for name in REQUIRED_FILES[kind]:
        if name == WEIGHTS_FILE[kind]:
            continue  # may be sharded; checked below
        _check_present(folder / name)
    weights = weight_files(folder, kind)
    for path in weights:
        _check_present(path)
    _check_config_kind(folder, kind, read_config(folder))
    for path in weights:
        safetensors_header(path)
    if kind == "dit":
        _check_zip(folder / "silence_latent.pt")
    return folder


def _check_present(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing file; re-run `ace-companion download` for this model")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file; delete it and re-run `ace-companion download`")


def folder_size(folder: str | os.PathLike) -> int:
    """Bytes of the regular files under a folder (0 when it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def is_tiny(folder: str | os.PathLike) -> bool:
    """True for a folder written by `make-tiny-checkpoints` (random weights, renders noise)."""
    return (Path(folder) / TINY_MARKER).is_file()


def tiny_in_use(root: str | os.PathLike, dit: str | None, lm: str | None = None) -> bool:
    """Whether any folder the engine loads (DiT, VAE, text encoder, LM) holds tiny random weights."""
    root = Path(root)
    names = [VAE_DIR, TEXT_ENCODER_DIR] + ([dit] if dit else [])
    if lm:
        try:
            names.append(lm_folder_name(lm))
        except CheckpointError:
            names.append(lm)
    return any(is_tiny(root / name) for name in names)


def describe_root(root: str | os.PathLike | None = None) -> list[dict]:
    """One entry per registry folder: what is on disk under the checkpoints root.

    Keys: name, kind, repo_id, description, present (the folder exists), complete (it
    validates), tiny (random weights from `make-tiny-checkpoints`), size (bytes on disk),
    approx_size (published download size), problem (the validation message when present but
    incomplete, else None).
    """
    root = resolve_root(root)
    entries = []
    for spec in REGISTRY.values():
        folder = root / spec.name
        present = folder.is_dir()
        problem = None
        if present:
            try:
                validate_folder(folder, spec.kind)
            except CheckpointError as exc:
                problem = str(exc)
        entries.append({
            "name": spec.name,
            "kind": spec.kind,
            "repo_id": spec.repo_id,
            "description": spec.description,
            "present": present,
            "complete": present and problem is None,
            "tiny": present and is_tiny(folder),
            "size": folder_size(folder),
            "approx_size": spec.approx_size,
            "problem": problem,
        })
    return entries


# --------------------------------------------------------------------------------------------
# Strict loading


def load_safetensors_checked(path: str | os.PathLike, module, prefix: str = "",
                             allow_missing: Iterable[str] = ()) -> None:
    """Load a safetensors file into `module` strictly (same keys, same shapes).

    `path` may also be a `*.safetensors.index.json` (sharded weights). Keys are compared from
    the file header before any tensor is read: keys missing from the file, keys the module
    does not have, and shape mismatches each raise a one-line `CheckpointError` naming the
    file and the first offending key. `prefix` selects keys starting with it (and strips it);
    `allow_missing` names module keys the file may lack (tied weights such as `lm_head.weight`).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    files = _shards_from_index(path) if path.name.endswith(".index.json") and path.is_file() else [path]
    header: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in files:
        header.update(safetensors_header(file))
    if prefix:
        header = {k[len(prefix):]: v for k, v in header.items() if k.startswith(prefix)}
    expected = module.state_dict()
    allowed = set(allow_missing)
    missing = [k for k in expected if k not in header and k not in allowed]
    unexpected = [k for k in header if k not in expected]
    if missing:
        raise CheckpointError(f"{path}: missing key '{missing[0]}' ({len(missing)} missing); "
                              f"this file is not the model the folder name says")
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected); "
                              f"this file is not the model the folder name says")
    for key, (_, shape) in header.items():
        if shape != tuple(expected[key].shape):
            raise CheckpointError(f"{path}: key '{key}' has shape {shape}, the model expects "
                                  f"{tuple(expected[key].shape)}; the config.json and weights do not match")
    state = {}
    for file in files:
        try:
            loaded = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{file}: unreadable safetensors file ({exc}); "
                                  f"delete it and re-run `ace-companion download`") from None
        state.update(loaded)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    with torch.no_grad():
        result = module.load_state_dict(state, strict=False)
    still_missing = [k for k in result.missing_keys if k not in allowed]
    if still_missing or result.unexpected_keys:  # pragma: no cover - ruled out by the header check
        mismatch = still_missing[:1] or result.unexpected_keys[:1]
        raise CheckpointError(f"{path}: keys do not match the model ({mismatch})")


def load_vae(folder: str | os.PathLike):
    """The diffusers `AutoencoderOobleck` of a `vae/` folder, in float32, eval mode, loaded strictly.

    Built from config.json and filled with `load_safetensors_checked` (bf16 weights are upcast).
    """
    from diffusers import AutoencoderOobleck

    folder = validate_folder(folder, "vae")
    config = {k: v for k, v in read_config(folder).items() if not k.startswith("_")}
    try:
        with warnings.catch_warnings():  # diffusers builds Oobleck with the legacy weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            vae = AutoencoderOobleck(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: cannot build the VAE from it ({exc})") from None
    load_safetensors_checked(folder / WEIGHTS_FILE["vae"], vae)
    return vae.float().eval()


def load_text_encoder(folder: str | os.PathLike):
    """(tokenizer, transformers `Qwen3Model`) of the text-encoder folder, float32, eval mode.

    The model is built from config.json (no remote code) and loaded strictly; keys carry no
    `model.` prefix, as in the published folder.
    """
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    folder = validate_folder(folder, "text_encoder")
    config = read_config(folder)
    try:
        model = Qwen3Model(Qwen3Config(**{k: v for k, v in config.items() if k != "architectures"}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: cannot build the text encoder from it ({exc})") from None
    load_safetensors_checked(folder / WEIGHTS_FILE["text_encoder"], model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder / 'tokenizer.json'}: cannot load the tokenizer ({exc}); "
                              f"re-run `ace-companion download`") from None
    return tokenizer, model.float().eval()
