"""`make-tiny-checkpoints`: the full published layout, loadable strictly by our loaders."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from engine import checkpoints as ck
from engine.commands import tiny


@pytest.fixture
def tiny_root(tiny_checkpoints) -> Path:
    """`tiny.make_tiny_checkpoints(root, seed=0)`, made once per session (tests/conftest.py)."""
    return tiny_checkpoints


def test_every_published_dit_folder_is_written(tiny_root):
    for name in ck.DIT_MODELS:
        ck.validate_folder(tiny_root / name, "dit")
        config = json.loads((tiny_root / name / "config.json").read_text())
        assert config["is_turbo"] == ("turbo" in name)
        assert config["model_type"] == "acestep"
        module = "modeling_acestep_v15_" + ("xl_" if "-xl-" in name else "") + ("turbo" if "turbo" in name else "base")
        assert config["auto_map"]["AutoModel"].startswith(module + ".")
    ck.validate_folder(tiny_root / "vae", "vae")
    ck.validate_folder(tiny_root / "Qwen3-Embedding-0.6B", "text_encoder")
    entries = {e["name"]: e for e in ck.describe_root(tiny_root)}
    assert {n for n, e in entries.items() if e["complete"]} == set(ck.DIT_MODELS) | {"vae", "Qwen3-Embedding-0.6B"}
    assert not list(tiny_root.rglob("*.py"))


def test_dit_has_the_parity_architecture(tiny_root, parity_checkpoints):
    ours = ck.safetensors_header(tiny_root / "acestep-v15-base" / "model.safetensors")
    parity = ck.safetensors_header(parity_checkpoints / "acestep-v15-base" / "model.safetensors")
    assert {k: v[1] for k, v in ours.items()} == {k: v[1] for k, v in parity.items()}
    ours_config = json.loads((tiny_root / "acestep-v15-turbo" / "config.json").read_text())
    parity_config = json.loads((parity_checkpoints / "acestep-v15-turbo" / "config.json").read_text())
    assert ours_config == parity_config


def test_dit_loads_strictly_with_our_model_class(tiny_root):
    import torch

    from engine.models.acestep import AceStepConditionGenerationModel

    model = AceStepConditionGenerationModel.from_folder(tiny_root / "acestep-v15-turbo")
    assert model.config.is_turbo
    assert tuple(model.silence_latent.shape) == (1, 15000, 64)
    assert torch.isfinite(model.null_condition_emb).all()
    base = AceStepConditionGenerationModel.from_folder(tiny_root / "acestep-v15-base")
    assert not base.config.is_turbo
    assert not torch.equal(base.decoder.proj_in[1].weight, model.decoder.proj_in[1].weight)
    assert torch.equal(base.silence_latent, model.silence_latent)


def test_same_seed_same_weights_other_seed_other_weights(tiny_root, tmp_path):
    import torch
    from safetensors.torch import load_file

    tiny.make_tiny_checkpoints(tmp_path / "again", seed=0, dits=["acestep-v15-turbo"], log=lambda m: None)
    tiny.make_tiny_checkpoints(tmp_path / "other", seed=1, dits=["acestep-v15-turbo"], log=lambda m: None)
    assert not (tmp_path / "again" / "acestep-v15-base").exists()
    first = load_file(str(tiny_root / "acestep-v15-turbo" / "model.safetensors"))
    again = load_file(str(tmp_path / "again" / "acestep-v15-turbo" / "model.safetensors"))
    other = load_file(str(tmp_path / "other" / "acestep-v15-turbo" / "model.safetensors"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["decoder.proj_out.1.weight"], other["decoder.proj_out.1.weight"])
    for name in ("vae/diffusion_pytorch_model.safetensors", "Qwen3-Embedding-0.6B/model.safetensors",
                 "Qwen3-Embedding-0.6B/tokenizer.json"):
        assert (tiny_root / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    silence = torch.load(str(tiny_root / "acestep-v15-turbo" / "silence_latent.pt"), weights_only=True)
    assert silence.dtype == torch.float32 and tuple(silence.shape) == (1, 64, 15000)


def test_vae_loads_and_has_the_real_hop(tiny_root, parity_checkpoints):
    import torch

    header = ck.safetensors_header(tiny_root / "vae" / "diffusion_pytorch_model.safetensors")
    parity = ck.safetensors_header(parity_checkpoints / "vae" / "diffusion_pytorch_model.safetensors")
    assert header == parity  # same keys, shapes and bf16 dtype as the published layout
    vae = ck.load_vae(tiny_root / "vae")
    with torch.no_grad():
        audio = vae.decode(torch.randn(1, 64, 3)).sample
    assert tuple(audio.shape) == (1, 2, 3 * 1920)


def test_text_encoder_and_tokenizer(tiny_root):
    import torch

    tokenizer, encoder = ck.load_text_encoder(tiny_root / "Qwen3-Embedding-0.6B")
    assert type(tokenizer).__name__ == "Qwen2TokenizerFast"
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.pad_token_id == end_of_text
    assert tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer("# Caption\nA warm bass line, 120 bpm")["input_ids"]
    assert ids[-1] == end_of_text and ids.count(end_of_text) == 1
    pair = tokenizer("verse", "chorus")["input_ids"]
    assert pair.count(end_of_text) == 2
    text = "Zürich — [Chorus] F# minor ♭"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    assert tokenizer("1234")["input_ids"][:-1] == [tokenizer.convert_tokens_to_ids(d) for d in "1234"]
    special = [tokenizer.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS]
    assert special == list(range(len(tokenizer) - 3, len(tokenizer)))
    keys = list(ck.safetensors_header(tiny_root / "Qwen3-Embedding-0.6B" / "model.safetensors"))
    assert "embed_tokens.weight" in keys and not any(k.startswith("model.") for k in keys)
    assert encoder.config.vocab_size == len(tokenizer)
    with torch.no_grad():
        hidden = encoder(input_ids=torch.tensor([ids])).last_hidden_state
    assert tuple(hidden.shape) == (1, len(ids), 32) and torch.isfinite(hidden).all()


def test_cli_writes_the_layout_and_says_so(tmp_path, capsys, monkeypatch):
    from ace_companion.cli import main

    monkeypatch.setitem(sys.modules, "engine.lm.tiny", None)  # LM helper absent: skipped with a note
    assert main(["make-tiny-checkpoints", str(tmp_path / "t"), "--seed", "5", "--with-lm"]) == 0
    out = capsys.readouterr().out
    for name in ck.DIT_MODELS + ("vae", "Qwen3-Embedding-0.6B"):
        assert f"wrote {tmp_path / 't' / name}" in out
    assert "note: LM folders skipped" in out
    assert f"--checkpoints {(tmp_path / 't').resolve()}" in out


def test_with_lm_calls_the_lm_helper(tmp_path, monkeypatch):
    calls = []

    def make_tiny_lm(folder, seed):
        calls.append((Path(folder), seed))

    monkeypatch.setitem(sys.modules, "engine.lm.tiny", types.SimpleNamespace(make_tiny_lm=make_tiny_lm))
    written = tiny.make_tiny_checkpoints(tmp_path, seed=2, with_lm=True, dits=[], log=lambda m: None)
    assert [folder.name for folder, _ in calls] == list(ck.LM_MODELS)
    assert len({seed for _, seed in calls}) == len(ck.LM_MODELS)
    assert [p.name for p in written] == ["vae", "Qwen3-Embedding-0.6B", *ck.LM_MODELS]


def test_cli_rejects_a_file_as_target(tmp_path, capsys):
    from ace_companion.cli import main

    target = tmp_path / "file"
    target.write_text("x")
    assert main(["make-tiny-checkpoints", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_pipeline_renders_from_tiny_checkpoints(tiny_root):
    import numpy as np

    from engine.pipeline import Pipeline
    from engine.request import GenerationRequest

    pipeline = Pipeline.from_checkpoints(tiny_root, device="cpu")
    assert pipeline.info()["dit"] == "acestep-v15-turbo"
    assert pipeline.info()["checkpoints"] == str(tiny_root.resolve())
    events = []
    request = GenerationRequest.from_dict({"caption": "warm bass line, punchy drums", "lyrics": "[Instrumental]",
                                           "duration": 5.2, "inference_steps": 2, "seed": 7})
    output = pipeline.generate(request, progress=events.append)
    assert output.seeds == [7]
    (audio,) = output.audio
    audio = np.asarray(audio)
    assert audio.shape == (2, 130 * 1920) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert [e.step for e in events if e.stage == "diffusion"][-1] == 2

    again = pipeline.generate(GenerationRequest.from_dict(request.to_dict() | {"dit": "acestep-v15-base"}))
    assert pipeline.info()["dit"] == "acestep-v15-base" and again.models["dit"] == "acestep-v15-base"


def test_every_tiny_folder_is_marked_and_listed_as_tiny(tiny_root, capsys):
    from engine.commands import download
    for name in list(ck.DIT_MODELS) + ["vae", "Qwen3-Embedding-0.6B"]:
        assert ck.is_tiny(tiny_root / name)
    assert ck.tiny_in_use(tiny_root, "acestep-v15-turbo")
    download.print_list(tiny_root)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("acestep-v15-turbo ")]
    assert rows and " tiny " in rows[0] and " complete " not in rows[0]
    assert ck.TINY_WARNING in out
