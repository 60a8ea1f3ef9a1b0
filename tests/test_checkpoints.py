"""Checkpoint registry, validation and strict loading, on copies of the parity folders."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest

from engine import checkpoints as ck
from engine.types import CheckpointError

KIND_OF = {"acestep-v15-turbo": "dit", "acestep-v15-base": "dit", "vae": "vae",
           "Qwen3-Embedding-0.6B": "text_encoder"}


def _copy(parity_checkpoints: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(parity_checkpoints / name, target)
    return target


def _raises_one_line(func, *args, match: str, names: Path | str) -> str:
    with pytest.raises(CheckpointError) as info:
        func(*args)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(names) in message, message
    assert match in message, message
    return message


# ------------------------------------------------------------------------------------ registry

def test_registry_covers_every_published_folder():
    assert set(ck.DIT_MODELS) | set(ck.LM_MODELS) | {ck.VAE_DIR, ck.TEXT_ENCODER_DIR} == set(ck.REGISTRY)
    main = {name for name, spec in ck.REGISTRY.items() if spec.repo_id == ck.MAIN_REPO}
    assert main == {"acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B", "acestep-5Hz-lm-1.7B"}
    assert ck.REGISTRY["acestep-v15-base"].repo_id == "ACE-Step/acestep-v15-base"
    assert ck.REGISTRY["acestep-5Hz-lm-4B"].repo_id == "ACE-Step/acestep-5Hz-lm-4B"
    for spec in ck.REGISTRY.values():
        assert spec.kind in ck.KINDS and spec.approx_size > 0


def test_allow_patterns_select_the_folder_and_never_python_files():
    turbo = ck.REGISTRY["acestep-v15-turbo"].allow_patterns()
    assert "acestep-v15-turbo/model.safetensors" in turbo
    assert all(p.startswith("acestep-v15-turbo/") for p in turbo)
    sub = ck.REGISTRY["acestep-5Hz-lm-0.6B"].allow_patterns()
    assert "*.safetensors" in sub and "*.json" in sub
    for spec in ck.REGISTRY.values():
        assert not any(p.endswith(".py") or p.endswith("*") for p in spec.allow_patterns())


def test_lm_names_and_spec_lookup():
    assert ck.lm_folder_name("1.7B") == "acestep-5Hz-lm-1.7B"
    assert ck.spec_for("4B").name == "acestep-5Hz-lm-4B"
    assert ck.spec_for("vae").kind == "vae"
    with pytest.raises(CheckpointError, match="unknown checkpoint 'nope'"):
        ck.spec_for("nope")
    with pytest.raises(CheckpointError, match="0.6B, 1.7B, 4B"):
        ck.lm_folder_name("2B")


def test_resolve_root_prefers_argument_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ck.ENV_ROOT, str(tmp_path / "env"))
    assert ck.resolve_root(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert ck.resolve_root(None) == (tmp_path / "env").resolve()
    monkeypatch.delenv(ck.ENV_ROOT)
    monkeypatch.chdir(tmp_path)
    assert ck.resolve_root() == (tmp_path / "checkpoints").resolve()


# ---------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("name", sorted(KIND_OF))
def test_parity_folders_validate(parity_checkpoints, name):
    assert ck.validate_folder(parity_checkpoints / name, KIND_OF[name]) == parity_checkpoints / name


def test_describe_root_reports_present_and_missing(parity_checkpoints):
    entries = {e["name"]: e for e in ck.describe_root(parity_checkpoints)}
    assert set(entries) == set(ck.REGISTRY)
    for name in KIND_OF:
        assert entries[name]["present"] and entries[name]["complete"] and entries[name]["problem"] is None
        assert entries[name]["size"] == sum(p.stat().st_size for p in (parity_checkpoints / name).iterdir())
    assert not entries["acestep-v15-sft"]["present"] and not entries["acestep-v15-sft"]["complete"]
    assert entries["acestep-v15-sft"]["size"] == 0


def test_describe_root_explains_an_incomplete_folder(parity_checkpoints, tmp_path):
    folder = _copy(parity_checkpoints, tmp_path, "vae")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    entry = {e["name"]: e for e in ck.describe_root(tmp_path)}["vae"]
    assert entry["present"] and not entry["complete"]
    assert "diffusion_pytorch_model.safetensors: missing file" in entry["problem"]


def test_missing_folder(tmp_path):
    _raises_one_line(ck.validate_folder, tmp_path / "acestep-v15-turbo", "dit",
                     match="checkpoint folder not found", names=tmp_path / "acestep-v15-turbo")


@pytest.mark.parametrize("name,file", [("acestep-v15-turbo", "silence_latent.pt"),
                                       ("acestep-v15-turbo", "model.safetensors"),
                                       ("vae", "config.json"),
                                       ("Qwen3-Embedding-0.6B", "tokenizer.json")])
def test_missing_file(parity_checkpoints, tmp_path, name, file):
    folder = _copy(parity_checkpoints, tmp_path, name)
    (folder / file).unlink()
    message = _raises_one_line(ck.validate_folder, folder, KIND_OF[name], match="missing file", names=folder / file)
    assert "ace-companion download" in message


def test_empty_file(parity_checkpoints, tmp_path):
    folder = _copy(parity_checkpoints, tmp_path, "acestep-v15-turbo")
    (folder / "model.safetensors").write_bytes(b"")
    _raises_one_line(ck.validate_folder, folder, "dit", match="empty file", names=folder / "model.safetensors")


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_safetensors(parity_checkpoints, tmp_path, keep):
    folder = _copy(parity_checkpoints, tmp_path, "acestep-v15-turbo")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _raises_one_line(ck.validate_folder, folder, "dit", match="truncated safetensors", names=path)


def test_safetensors_with_a_cut_header(parity_checkpoints, tmp_path):
    folder = _copy(parity_checkpoints, tmp_path, "vae")
    path = folder / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[:200])  # header length says more than is there
    _raises_one_line(ck.safetensors_header, path, match="truncated safetensors", names=path)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"oops" + b"\0" * 16)
    _raises_one_line(ck.safetensors_header, path, match="not a safetensors file", names=path)


def test_safetensors_header_matches_the_file(parity_checkpoints):
    from safetensors import safe_open

    path = parity_checkpoints / "acestep-v15-turbo" / "model.safetensors"
    header = ck.safetensors_header(path)
    with safe_open(str(path), "pt") as handle:
        assert set(header) == set(handle.keys())
        for key in handle.keys():
            assert header[key][1] == tuple(handle.get_slice(key).get_shape())


def test_truncated_silence_latent(parity_checkpoints, tmp_path):
    folder = _copy(parity_checkpoints, tmp_path, "acestep-v15-base")
    path = folder / "silence_latent.pt"
    path.write_bytes(path.read_bytes()[:100_000])
    _raises_one_line(ck.validate_folder, folder, "dit", match="truncated or not a torch.save file", names=path)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff"])
def test_unreadable_config(parity_checkpoints, tmp_path, content):
    folder = _copy(parity_checkpoints, tmp_path, "Qwen3-Embedding-0.6B")
    path = folder / "config.json"
    path.write_bytes(content.encode("latin-1"))
    _raises_one_line(ck.validate_folder, folder, "text_encoder", match="config.json", names=path)


def test_wrong_model_type(parity_checkpoints, tmp_path):
    folder = _copy(parity_checkpoints, tmp_path, "acestep-v15-turbo")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "qwen3"
    (folder / "config.json").write_text(json.dumps(config))
    _raises_one_line(ck.validate_folder, folder, "dit", match="expected 'acestep'", names=folder / "config.json")


# ------------------------------------------------------------------------------ strict loading

def _rename_key(path: Path, old: str, new: str) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state[new] = state.pop(old)
    save_file(state, str(path), metadata={"format": "pt"})


def test_renamed_key_in_text_encoder(parity_checkpoints, tmp_path):
    folder = _copy(parity_checkpoints, tmp_path, "Qwen3-Embedding-0.6B")
    _rename_key(folder / "model.safetensors", "norm.weight", "model.norm.weight")
    message = _raises_one_line(ck.load_text_encoder, folder, match="missing key 'norm.weight'",
                               names=folder / "model.safetensors")
    assert "(1 missing)" in message


def test_renamed_key_in_dit(parity_checkpoints, tmp_path):
    from engine.models.acestep import AceStepConditionGenerationModel

    folder = _copy(parity_checkpoints, tmp_path, "acestep-v15-turbo")
    _rename_key(folder / "model.safetensors", "null_condition_emb", "null_condition_embedding")
    _raises_one_line(AceStepConditionGenerationModel.from_folder, folder, match="missing key 'null_condition_emb'",
                     names=folder / "model.safetensors")


def test_extra_key_is_rejected(parity_checkpoints, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    folder = _copy(parity_checkpoints, tmp_path, "vae")
    path = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state["decoder.extra.weight"] = torch.zeros(2)
    save_file(state, str(path), metadata={"format": "pt"})
    _raises_one_line(ck.load_vae, folder, match="unexpected key 'decoder.extra.weight'", names=path)


@pytest.mark.parametrize("name,field,value", [("acestep-v15-turbo", "intermediate_size", 96),
                                              ("Qwen3-Embedding-0.6B", "intermediate_size", 48),
                                              ("vae", "decoder_channels", 16)])
def test_shape_changed_in_config(parity_checkpoints, tmp_path, name, field, value):
    from engine.models.acestep import AceStepConditionGenerationModel

    folder = _copy(parity_checkpoints, tmp_path, name)
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    loader = {"dit": AceStepConditionGenerationModel.from_folder, "vae": ck.load_vae,
              "text_encoder": ck.load_text_encoder}[KIND_OF[name]]
    weights = folder / ck.WEIGHTS_FILE[KIND_OF[name]]
    message = _raises_one_line(loader, folder, match="the config.json and weights do not match", names=weights)
    assert "has shape" in message and "the model expects" in message


def test_allow_missing_accepts_tied_weights(parity_checkpoints, tmp_path):
    import torch
    from torch import nn

    class WithHead(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.lm_head = nn.Linear(2, 2, bias=False)

    _, encoder = ck.load_text_encoder(parity_checkpoints / "Qwen3-Embedding-0.6B")
    module = WithHead(type(encoder)(encoder.config))
    path = parity_checkpoints / "Qwen3-Embedding-0.6B" / "model.safetensors"
    # keys in the file lack the "inner." prefix: load through a renamed copy
    from safetensors.torch import load_file, save_file

    state = {f"inner.{k}": v for k, v in load_file(str(path)).items()}
    renamed = tmp_path / "model.safetensors"
    save_file(state, str(renamed))
    with pytest.raises(CheckpointError, match="missing key 'lm_head.weight'"):
        ck.load_safetensors_checked(renamed, module)
    ck.load_safetensors_checked(renamed, module, allow_missing=["lm_head.weight"])
    assert torch.equal(module.inner.norm.weight, encoder.norm.weight)


def test_prefix_selects_and_strips_keys(parity_checkpoints, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    path = parity_checkpoints / "Qwen3-Embedding-0.6B" / "model.safetensors"
    prefixed = tmp_path / "model.safetensors"
    save_file({f"model.{k}": v for k, v in load_file(str(path)).items()}, str(prefixed))
    _, reference = ck.load_text_encoder(parity_checkpoints / "Qwen3-Embedding-0.6B")
    fresh = type(reference)(reference.config)
    ck.load_safetensors_checked(prefixed, fresh, prefix="model.")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), reference.state_dict().values()))


def _shard(folder: Path, weights_name: str) -> list[str]:
    """Split `folder/weights_name` into two shards plus an index, like the 4B LM."""
    from safetensors.torch import load_file, save_file

    single = folder / weights_name
    state = load_file(str(single))
    keys = sorted(state)
    stem = weights_name.replace(".safetensors", "")
    names = [f"{stem}-00001-of-00002.safetensors", f"{stem}-00002-of-00002.safetensors"]
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for shard_name, shard_keys in zip(names, halves):
        save_file({k: state[k] for k in shard_keys}, str(folder / shard_name), metadata={"format": "pt"})
        weight_map.update({k: shard_name for k in shard_keys})
    (folder / f"{weights_name}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    single.unlink()
    return names


def test_sharded_weights_validate_and_load(parity_checkpoints, tmp_path):
    import torch

    folder = _copy(parity_checkpoints, tmp_path, "Qwen3-Embedding-0.6B")
    names = _shard(folder, "model.safetensors")
    ck.validate_folder(folder, "text_encoder")
    assert [p.name for p in ck.weight_files(folder, "text_encoder")] == names
    _, reference = ck.load_text_encoder(parity_checkpoints / "Qwen3-Embedding-0.6B")
    fresh = type(reference)(reference.config)
    ck.load_safetensors_checked(folder / "model.safetensors.index.json", fresh)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), reference.state_dict().values()))

    (folder / names[1]).unlink()
    _raises_one_line(ck.validate_folder, folder, "text_encoder", match="missing file", names=folder / names[1])


# ------------------------------------------------------------------------ .py files are inert

_TRAP = """\
import pathlib
pathlib.Path({marker!r}).write_text("imported")
print("TRAP IMPORTED")
raise RuntimeError("checkpoint .py file was imported")
"""


def test_python_files_in_checkpoint_folders_are_never_imported(parity_checkpoints, tmp_path, capsys):
    from engine.models.acestep import AceStepConditionGenerationModel

    root = tmp_path / "checkpoints"
    marker = tmp_path / "imported.txt"
    traps = {}
    for name, py_names in {"acestep-v15-turbo": ["configuration_acestep_v15.py", "modeling_acestep_v15_turbo.py"],
                           "vae": ["autoencoder_oobleck.py"],
                           "Qwen3-Embedding-0.6B": ["modeling_qwen3.py", "tokenization_qwen2.py"]}.items():
        folder = _copy(parity_checkpoints, root, name)
        for py_name in py_names:
            path = folder / py_name
            path.write_text(_TRAP.format(marker=str(marker)))
            traps[path] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)

    model = AceStepConditionGenerationModel.from_folder(root / "acestep-v15-turbo")
    vae = ck.load_vae(root / "vae")
    tokenizer, encoder = ck.load_text_encoder(root / "Qwen3-Embedding-0.6B")
    ck.describe_root(root)
    for name, kind in KIND_OF.items():
        if (root / name).is_dir():
            ck.validate_folder(root / name, kind)

    assert model.config.is_turbo and vae is not None and encoder is not None
    assert tokenizer("a")["input_ids"][-1] == tokenizer.pad_token_id
    assert not marker.exists()
    assert "TRAP IMPORTED" not in capsys.readouterr().out
    for path, (digest, mtime) in traps.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
        assert path.stat().st_mtime_ns == mtime
    assert not list(root.rglob("__pycache__"))


def test_engine_wrappers_load_text_encoder_and_vae_strictly(tmp_path, parity_checkpoints):
    """The pipeline's own wrappers refuse a renamed key instead of random-initialising the layer."""
    import shutil

    from safetensors.torch import load_file, save_file

    from engine.models.text_encoder import TextEncoder
    from engine.models.vae import VAE
    from engine.types import CheckpointError

    for name, weights, wrapper in (("Qwen3-Embedding-0.6B", "model.safetensors", TextEncoder),
                                   ("vae", "diffusion_pytorch_model.safetensors", VAE)):
        folder = tmp_path / name
        shutil.copytree(parity_checkpoints / name, folder)
        state = load_file(str(folder / weights))
        key = sorted(state)[-1]
        state["renamed." + key] = state.pop(key)
        save_file(state, str(folder / weights))
        with pytest.raises(CheckpointError, match="missing key"):
            wrapper.from_folder(folder)
