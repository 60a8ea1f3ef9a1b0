"""DiT module tree: key names and shapes, the full-size 2B parameter budget (on the meta device),
strict loading, sequence packing and attention masks."""

from __future__ import annotations

import re
import shutil
from collections import Counter

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.models.acestep import (
    AceStepConditionGenerationModel,
    AceStepConfig,
    build_self_attention_mask,
    pack_sequences,
)
from engine.types import CheckpointError
from tests.parity_utils import CHECKPOINTS

TURBO = CHECKPOINTS / "acestep-v15-turbo"


def _meta_model(config: AceStepConfig) -> AceStepConditionGenerationModel:
    with torch.device("meta"):
        return AceStepConditionGenerationModel(config)


def _checkpoint_shapes(path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), "pt") as fh:
        return {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}


def _layer_pattern(key: str) -> str:
    return re.sub(r"\.layers\.\d+\.", ".layers.N.", key)


def test_tiny_config_builds_exactly_the_checkpoint_keys_and_shapes():
    config = AceStepConfig.from_json_file(TURBO / "config.json")
    model = _meta_model(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _checkpoint_shapes(TURBO / "model.safetensors")


def test_full_size_2b_on_meta_device():
    model = _meta_model(AceStepConfig())
    state = model.state_dict()
    assert len(state) == 677
    assert sum(v.numel() for v in state.values()) == 2_393_872_518
    assert all(v.device.type == "meta" for v in state.values())

    def group(prefix):
        return sum(v.numel() for k, v in state.items() if k.startswith(prefix))

    assert group("decoder.layers.") == 1_510_404_096
    assert group("encoder.lyric_encoder.") == 404_789_248
    assert group("encoder.timbre_encoder.") == 201_481_216
    assert group("tokenizer.") == 105_032_198
    assert group("detokenizer.") == 105_011_776
    assert group("decoder.time_embed.") == 29_900_800
    assert group("decoder.time_embed_r.") == 29_900_800
    assert group("decoder.condition_embedder.") == 4_196_352
    assert group("encoder.text_projector.") == 2_097_152
    assert group("decoder.proj_in.") == 788_480
    assert group("decoder.proj_out.") == 262_208
    counts = Counter(k.split(".")[0] for k in state)
    assert counts["decoder"] == 24 * 19 + 20

    # Same key names as the tiny checkpoint once layer indices are folded; shapes follow the config.
    tiny = _checkpoint_shapes(TURBO / "model.safetensors")
    assert {_layer_pattern(k) for k in state} == {_layer_pattern(k) for k in tiny}
    expected = {
        "decoder.layers.0.self_attn.q_proj.weight": (2048, 2048),
        "decoder.layers.0.self_attn.k_proj.weight": (1024, 2048),
        "decoder.layers.23.cross_attn.v_proj.weight": (1024, 2048),
        "decoder.layers.0.self_attn.q_norm.weight": (128,),
        "decoder.layers.0.scale_shift_table": (1, 6, 2048),
        "decoder.scale_shift_table": (1, 2, 2048),
        "decoder.proj_in.1.weight": (2048, 192, 2),
        "decoder.proj_out.1.weight": (2048, 64, 2),
        "decoder.time_embed.linear_1.weight": (2048, 256),
        "decoder.time_embed.time_proj.weight": (12288, 2048),
        "encoder.text_projector.weight": (2048, 1024),
        "encoder.lyric_encoder.embed_tokens.weight": (2048, 1024),
        "encoder.lyric_encoder.layers.7.mlp.gate_proj.weight": (6144, 2048),
        "encoder.timbre_encoder.embed_tokens.weight": (2048, 64),
        "encoder.timbre_encoder.special_token": (1, 1, 2048),
        "tokenizer.quantizer.project_in.weight": (6, 2048),
        "tokenizer.quantizer.project_out.weight": (2048, 6),
        "tokenizer.attention_pooler.layers.1.self_attn.o_proj.weight": (2048, 2048),
        "detokenizer.special_tokens": (1, 5, 2048),
        "detokenizer.proj_out.weight": (64, 2048),
        "null_condition_emb": (1, 1, 2048),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key


def test_from_folder_loads_weights_and_silence_latent():
    model = AceStepConditionGenerationModel.from_folder(TURBO)
    weights = load_file(str(TURBO / "model.safetensors"))
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[key]), key
    assert model.silence_latent.shape == (1, 15000, 64)
    raw = torch.load(str(TURBO / "silence_latent.pt"), weights_only=True)
    assert torch.equal(model.silence_latent[0, :, 3], raw[0, 3, :])
    assert model.config.is_turbo and model.config.sliding_window == 4


def _copy_folder(tmp_path):
    folder = tmp_path / "acestep-v15-turbo"
    shutil.copytree(TURBO, folder)
    return folder


def test_wrong_shape_and_missing_key_are_one_line_errors(tmp_path):
    folder = _copy_folder(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    weights["decoder.norm_out.weight"] = torch.ones(65)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="decoder.norm_out.weight") as info:
        AceStepConditionGenerationModel.from_folder(folder)
    assert "\n" not in str(info.value)

    del weights["decoder.norm_out.weight"]
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing key 'decoder.norm_out.weight'"):
        AceStepConditionGenerationModel.from_folder(folder)


def test_truncated_weights_and_missing_silence_latent(tmp_path):
    folder = _copy_folder(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        AceStepConditionGenerationModel.from_folder(folder)
    (folder / "model.safetensors").write_bytes(data)
    (folder / "silence_latent.pt").unlink()
    with pytest.raises(CheckpointError, match="silence_latent.pt"):
        AceStepConditionGenerationModel.from_folder(folder)


def test_pack_sequences_moves_valid_rows_first_in_order():
    h1 = torch.tensor([[[1.0], [2.0], [0.0]], [[4.0], [5.0], [6.0]]])
    m1 = torch.tensor([[True, True, False], [True, True, True]])
    h2 = torch.tensor([[[7.0], [8.0]], [[9.0], [0.0]]])
    m2 = torch.tensor([[True, True], [True, False]])
    hidden, mask = pack_sequences(h1, h2, m1, m2)
    assert hidden[0, :4, 0].tolist() == [1.0, 2.0, 7.0, 8.0]
    assert hidden[1, :4, 0].tolist() == [4.0, 5.0, 6.0, 9.0]
    assert mask.tolist() == [[True] * 4 + [False], [True] * 4 + [False]]


def test_pack_sequences_without_padding_is_concatenation():
    h1, h2 = torch.randn(1, 3, 4), torch.randn(1, 2, 4)
    hidden, mask = pack_sequences(h1, h2, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
    assert torch.equal(hidden, torch.cat([h1, h2], dim=1)) and bool(mask.all())


def test_sliding_window_mask_is_a_band_and_full_layers_have_none():
    config = AceStepConfig(sliding_window=2, num_hidden_layers=2)
    mask = build_self_attention_mask(config, 0, 6, "cpu")
    assert mask[0].tolist() == [True, True, True, False, False, False]
    assert mask[5].tolist() == [False, False, False, True, True, True]
    assert build_self_attention_mask(config, 1, 6, "cpu") is None
    padded = build_self_attention_mask(config, 1, 6, "cpu", key_padding=torch.tensor([[1, 1, 1, 1, 0, 0]]))
    assert padded.shape == (1, 1, 1, 6) and padded[0, 0, 0].tolist() == [True] * 4 + [False] * 2


@pytest.fixture(scope="module")
def tiny_model():
    return AceStepConditionGenerationModel.from_folder(TURBO)


def test_lyric_encoder_ignores_padding_contents(tiny_model):
    encoder = tiny_model.encoder.lyric_encoder
    lyrics = torch.randn(1, 7, 32)
    alone = encoder(lyrics, torch.ones(1, 7, dtype=torch.bool))
    padded = torch.cat([lyrics, 100 * torch.randn(1, 3, 32)], dim=1)
    mask = torch.tensor([[True] * 7 + [False] * 3])
    assert torch.allclose(encoder(padded, mask)[:, :7], alone, atol=1e-5)


def test_timbre_tokens_are_grouped_by_order_mask(tiny_model):
    refs = torch.randn(3, 20, 64)
    tokens, mask = tiny_model.encoder.timbre_encoder(refs, torch.tensor([0, 1, 0]), 2)
    single = [tiny_model.encoder.timbre_encoder(refs[i:i + 1], torch.tensor([0]), 1)[0][0, 0] for i in range(3)]
    assert mask.tolist() == [[True, True], [True, False]]
    assert torch.allclose(tokens[0, 0], single[0], atol=1e-5)
    assert torch.allclose(tokens[0, 1], single[2], atol=1e-5)
    assert torch.allclose(tokens[1, 0], single[1], atol=1e-5)


def test_cross_attention_cache_equals_recomputation(tiny_model):
    decoder = tiny_model.decoder
    enc = torch.randn(1, 9, 64)
    x, ctx = torch.randn(1, 11, 64), torch.randn(1, 11, 128)
    cache = decoder.cross_attention_cache(enc)
    first = decoder(x, torch.tensor([0.7]), ctx, cache)
    again = decoder(x, torch.tensor([0.7]), ctx, cache)
    fresh = decoder(x, torch.tensor([0.7]), ctx, decoder.cross_attention_cache(enc.clone()))
    assert first.shape == (1, 11, 64)
    assert torch.equal(first, again) and torch.allclose(first, fresh)


def test_tokenize_pads_with_silence_and_detokenize_restores_rate(tiny_model):
    latents = torch.randn(1, 12, 64)
    quantized, indices = tiny_model.tokenize(latents)
    assert quantized.shape == (1, 3, 64) and indices.shape == (1, 3, 1)
    assert int(indices.min()) >= 0 and int(indices.max()) < 64000
    manual = torch.cat([latents, tiny_model.silence_latent[:, :3]], dim=1)
    assert torch.equal(tiny_model.tokenizer(manual)[1], indices)
    assert tiny_model.detokenize(quantized).shape == (1, 15, 64)
    decoded = tiny_model.tokenizer.quantizer.codes_to_output(indices)
    assert torch.allclose(decoded, quantized, atol=1e-6)
