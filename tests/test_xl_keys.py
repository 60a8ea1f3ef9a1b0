"""The XL (4B) DiT built by our code has exactly the published key list and shapes.

The expected list is a stored table of key patterns with symbolic shapes
(tests/data/parity-xl/xl_key_shapes.json), written from the spec and upstream's XL module tree,
not from engine/models. It is first checked against the tiny XL checkpoint that upstream's own
code wrote (tests/data/parity-xl), then expanded with the published XL sizes and compared with
our model built on the meta device (no 4B parameters are allocated).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine.checkpoints import dit_weights_path, safetensors_header, validate_folder
from engine.models.acestep import AceStepConditionGenerationModel, AceStepConfig
from tests.test_parity_xl import XL_CHECKPOINTS, XL_DATA

TABLE = json.loads((XL_DATA / "xl_key_shapes.json").read_text(encoding="utf-8"))

# The published XL config.json values (spec section 3, XL column) plus the 2B defaults they share.
XL_CONFIG = {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8, "head_dim": 128, "encoder_hidden_size": 2048,
             "encoder_intermediate_size": 6144, "encoder_num_attention_heads": 16,
             "encoder_num_key_value_heads": 8, "model_type": "acestep", "is_turbo": True,
             "auto_map": {"AutoModel": "modeling_acestep_v15_xl_turbo.AceStepConditionGenerationModel"}}


def expand(values: dict) -> dict[str, tuple[int, ...]]:
    """Key -> shape for one set of sizes."""
    def size(expr: str) -> int:
        return math.prod(int(part) if part.isdigit() else values[part] for part in expr.split("*"))

    out = {}
    for pattern, dims in TABLE["keys"].items():
        shape = tuple(size(d) for d in dims)
        stack = next((s for s in TABLE["layers"] if pattern.startswith(s + ".{i}.")), None)
        if stack is None:
            out[pattern] = shape
            continue
        for i in range(values[TABLE["layers"][stack]]):
            out[pattern.replace("{i}", str(i))] = shape
    return out


def test_table_matches_the_checkpoint_upstream_wrote():
    """The stored table, at the tiny sizes, is exactly the tiny XL checkpoint's key list and shapes."""
    folder = XL_CHECKPOINTS / "acestep-v15-xl-turbo"
    header = {}
    for shard in sorted(folder.glob("model-*-of-*.safetensors")):
        header.update({k: shape for k, (_, shape) in safetensors_header(shard).items()})
    assert header == expand(TABLE["tiny"])


def test_meta_model_has_the_published_xl_keys_and_shapes():
    config = AceStepConfig.from_dict(XL_CONFIG)
    assert config.is_xl
    with torch.device("meta"):
        model = AceStepConditionGenerationModel(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expand(TABLE["xl"])
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    params = sum(math.prod(s) for s in expected.values())
    # the published fp32 XL repos hold about 19.9 GB of weights (spec section 2): 4 bytes per parameter
    assert abs(4 * params - 19.9e9) < 0.01 * 19.9e9
    assert all(p.device.type == "meta" for p in model.parameters())


def test_xl_folders_load_from_shards():
    """The published sharded layout (no model.safetensors) validates and loads as is."""
    for name in ("acestep-v15-xl-turbo", "acestep-v15-xl-base"):
        folder = XL_CHECKPOINTS / name
        assert not (folder / "model.safetensors").exists()
        validate_folder(folder, "dit")
        assert dit_weights_path(folder).name == "model.safetensors.index.json"
        model = AceStepConditionGenerationModel.from_folder(folder)
        assert model.config.is_xl and model.encoder.timbre_encoder.use_cls_token
        assert model.null_condition_emb.shape == (1, 1, 64)
        assert model.decoder.condition_embedder.weight.shape == (80, 64)


def test_missing_shard_is_a_one_line_error(tmp_path):
    import shutil

    from engine.types import CheckpointError

    folder = tmp_path / "acestep-v15-xl-turbo"
    shutil.copytree(XL_CHECKPOINTS / "acestep-v15-xl-turbo", folder)
    (folder / "model-00003-of-00004.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00003-of-00004.safetensors: missing file"):
        validate_folder(folder, "dit")


def test_2b_configs_stay_2b():
    """A 2B config (no encoder_* keys, turbo auto_map) does not switch on the XL behaviour."""
    config = AceStepConfig.from_json_file(XL_DATA.parent / "parity" / "checkpoints" / "acestep-v15-turbo" /
                                          "config.json")
    assert not config.is_xl
    assert not AceStepConfig.from_dict({"encoder_hidden_size": 2048}).is_xl  # same width as the DiT: 2B
    assert AceStepConfig.from_dict({"encoder_hidden_size": 2048, "hidden_size": 2560}).is_xl


def test_tiny_xl_checkpoints_use_the_published_sharded_layout(tmp_path):
    from engine.checkpoints import XL_DIT_MODELS
    from engine.commands.tiny import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path, seed=0, dits=XL_DIT_MODELS, log=lambda message: None)
    for name in XL_DIT_MODELS:
        folder = validate_folder(tmp_path / name, "dit")
        assert not (folder / "model.safetensors").exists()
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        shards = sorted(folder.glob("model-*-of-00004.safetensors"))
        assert [p.name for p in shards] == sorted(set(index["weight_map"].values()))
        assert len(shards) == 4
        header = {}
        for shard in shards:
            header.update({k: shape for k, (_, shape) in safetensors_header(shard).items()})
        assert header == expand(TABLE["tiny"])
        assert index["metadata"]["total_size"] == sum(4 * math.prod(s) for s in header.values())
        config = json.loads((folder / "config.json").read_text())
        assert config["is_turbo"] == ("turbo" in name)
        assert AceStepConditionGenerationModel.from_folder(folder).config.is_xl


def test_download_lists_the_xl_folders_with_sizes(capsys):
    from ace_companion.cli import main
    from engine.checkpoints import XL_DIT_MODELS, spec_for

    assert main(["download", "--list", "--checkpoints", str(XL_CHECKPOINTS)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:] if line.strip()}
    for name in XL_DIT_MODELS:
        assert "19.9 GB" in lines[name] and f"ACE-Step/{name}" in lines[name]
        assert "model-*.safetensors" in spec_for(name).allow_patterns()
        assert "model.safetensors.index.json" in spec_for(name).allow_patterns()
    assert " complete " in lines["acestep-v15-xl-turbo"] and " missing " in lines["acestep-v15-xl-sft"]
