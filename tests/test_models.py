"""DiT module tree: key names and shapes against the published 2B list (on the meta device), strict
loading, sequence packing and attention masks, the DiT against a reference written from the spec,
the prepared/bucketed/compiled step loop, the parked FSQ codec."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.models.acestep import (
    AceStepConditionGenerationModel,
    AceStepConfig,
    DiTLoop,
    build_self_attention_mask,
    pack_sequences,
    resolve_compile,
)
from engine.types import CheckpointError
from tests.parity_utils import CHECKPOINTS

TURBO = CHECKPOINTS / "acestep-v15-turbo"
PUBLISHED_2B = Path(__file__).parent / "data" / "acestep15_2b_state_dict.json"


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


def _published_2b_shapes() -> tuple[dict[str, tuple[int, ...]], dict]:
    """The published 2B key/shape list (tests/data, typed from the spec), expanded per layer."""
    data = json.loads(PUBLISHED_2B.read_text(encoding="utf-8"))
    shapes = {key: tuple(shape) for key, shape in data["tensors"].items()}
    for prefix, (block, count) in data["stacks"].items():
        for index in range(count):
            for key, shape in data["blocks"][block].items():
                shapes[f"{prefix}.{index}.{key}"] = tuple(shape)
    return shapes, data["published"]


def test_published_2b_list_adds_up_to_the_published_counts():
    shapes, published = _published_2b_shapes()
    assert len(shapes) == published["tensors"]
    assert sum(math.prod(shape) for shape in shapes.values()) == published["parameters"]
    for prefix, count in published["groups"].items():
        assert sum(math.prod(shape) for key, shape in shapes.items() if key.startswith(prefix)) == count, prefix


def test_full_size_2b_on_meta_device_has_the_published_keys_and_shapes():
    model = _meta_model(AceStepConfig())
    state = model.state_dict()
    assert all(v.device.type == "meta" for v in state.values())
    shapes, published = _published_2b_shapes()
    ours = {key: tuple(value.shape) for key, value in state.items()}
    assert sorted(set(ours) ^ set(shapes)) == []
    assert {key for key in ours if ours[key] != shapes[key]} == set()
    assert sum(v.numel() for v in state.values()) == published["parameters"]

    # Same key names as the tiny checkpoint once layer indices are folded; shapes follow the config.
    tiny = _checkpoint_shapes(TURBO / "model.safetensors")
    assert {_layer_pattern(k) for k in state} == {_layer_pattern(k) for k in tiny}


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


def _reference_velocity(decoder, x, t, context, enc):
    """The DiT written out from spec section 4.1/4.2 with plain tensor maths: K/V heads repeated,
    RoPE, band mask and time embedding rebuilt here, cross K/V from `enc` directly (no cache)."""
    cfg = decoder.config
    b, frames, _ = x.shape
    heads, kv_heads, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

    def rms(h, weight):
        return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps))

    def time(module, s):
        freqs = torch.exp(-math.log(10000.0) * torch.arange(128) / 128)
        args = (s * 1000)[:, None] * freqs[None]
        emb = torch.cat([args.cos(), args.sin()], dim=-1)
        temb = module.linear_2(F.silu(module.linear_1(emb)))
        return temb, module.time_proj(F.silu(temb)).reshape(b, 6, -1)

    def rotate(h, positions):
        inv = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
        angles = torch.cat([positions[:, None] * inv] * 2, dim=-1)
        half = torch.cat([-h[..., hd // 2:], h[..., :hd // 2]], dim=-1)
        return h * angles.cos() + half * angles.sin()

    def attend(module, hq, hkv, self_attention, band=None):
        q = rms(module.q_proj(hq).reshape(b, -1, heads, hd), module.q_norm.weight).transpose(1, 2)
        k = rms(module.k_proj(hkv).reshape(b, -1, kv_heads, hd), module.k_norm.weight).transpose(1, 2)
        v = module.v_proj(hkv).reshape(b, -1, kv_heads, hd).transpose(1, 2)
        if self_attention:
            positions = torch.arange(q.shape[2]).float()
            q, k = rotate(q, positions), rotate(k, positions)
        k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if band is not None:
            scores = scores.masked_fill(~band, float("-inf"))
        out = scores.softmax(-1) @ v
        return module.o_proj(out.transpose(1, 2).reshape(b, -1, heads * hd))

    temb_t, proj_t = time(decoder.time_embed, t)
    temb_r, proj_r = time(decoder.time_embed_r, torch.zeros_like(t))
    temb, tproj = temb_t + temb_r, proj_t + proj_r
    h = torch.cat([context, x], dim=-1)
    if frames % 2:
        h = torch.cat([h, torch.zeros(b, 1, h.shape[-1])], dim=1)
    h = F.conv1d(h.transpose(1, 2), decoder.proj_in[1].weight, decoder.proj_in[1].bias, stride=2).transpose(1, 2)
    tokens = h.shape[1]
    idx = torch.arange(tokens)
    window = (idx[:, None] - idx[None, :]).abs() <= cfg.sliding_window
    enc = decoder.condition_embedder(enc)
    for index, layer in enumerate(decoder.layers):
        sh, sc, g, csh, csc, cg = (layer.scale_shift_table + tproj).chunk(6, dim=1)
        band = window if cfg.layer_types[index] == "sliding_attention" else None
        modulated = rms(h, layer.self_attn_norm.weight) * (1 + sc) + sh
        h = h + g * attend(layer.self_attn, modulated, modulated, True, band)
        h = h + attend(layer.cross_attn, rms(h, layer.cross_attn_norm.weight), enc, False)
        h = h + cg * layer.mlp(rms(h, layer.mlp_norm.weight) * (1 + csc) + csh)
    shift, scale = (decoder.scale_shift_table + temb[:, None]).chunk(2, dim=1)
    h = rms(h, decoder.norm_out.weight) * (1 + scale) + shift
    out = F.conv_transpose1d(h.transpose(1, 2), decoder.proj_out[1].weight, decoder.proj_out[1].bias, stride=2)
    return out.transpose(1, 2)[:, :frames]


@pytest.fixture(scope="module")
def dit_inputs():
    """Two rows at different timesteps, an odd length longer than the sliding window (4 tokens)."""
    generator = torch.Generator().manual_seed(3)
    frames = 23
    x = torch.randn(2, frames, 64, generator=generator)
    context = torch.randn(2, frames, 128, generator=generator)
    enc = torch.randn(2, 9, 64, generator=generator)
    return x, torch.tensor([0.9, 0.4]), context, enc


def test_dit_velocity_matches_a_reference_written_from_the_spec(tiny_model, dit_inputs):
    x, t, context, enc = dit_inputs
    decoder = tiny_model.decoder
    reference = _reference_velocity(decoder, x, t, context, enc)
    assert reference.shape == x.shape
    velocity = decoder(x, t, context, decoder.cross_attention_cache(enc))
    assert torch.allclose(velocity, reference, atol=1e-5), float((velocity - reference).abs().max())


@pytest.mark.parametrize("bucket", [0, 50])
def test_prepared_loop_matches_the_reference_at_every_step(tiny_model, dit_inputs, bucket):
    """DiTLoop (set-up once: schedule modulation, RoPE, masks, padded context) equals the reference
    at each step of a schedule, with and without padding the length to a bucket."""
    x, _, context, enc = dit_inputs
    decoder = tiny_model.decoder
    timesteps = torch.tensor([1.0, 0.75, 0.3])
    cache = decoder.cross_attention_cache(enc)
    calls = []
    loop = DiTLoop(decoder, timesteps, x.shape[1], lambda phase: calls.append(phase) or (cache, context),
                   bucket=bucket)
    assert loop.length.padded_frames == (50 if bucket else 24)
    for step, t in enumerate(timesteps.tolist()):
        reference = _reference_velocity(decoder, x, torch.full((2,), t), context, enc)
        assert torch.allclose(loop(x, step), reference, atol=1e-5), (step, bucket)
    assert calls == [0]  # the conditioning of a phase is fetched (and padded) once


def test_bucket_padding_is_masked_out_of_every_real_row(tiny_model, dit_inputs):
    """Whatever sits in the padding frames, the real frames' velocity does not change."""
    x, _, context, enc = dit_inputs
    decoder = tiny_model.decoder
    cache = decoder.cross_attention_cache(enc)
    loop = DiTLoop(decoder, torch.tensor([0.6]), x.shape[1], lambda phase: (cache, context), bucket=50)
    length = loop.length
    noisy = length.pad(x).clone()
    noisy[:, x.shape[1] + 1:] = 1e3 * torch.randn_like(noisy[:, x.shape[1] + 1:])
    kwargs = dict(context_latents=length.pad(context), cross_kv=cache, rope=length.rope, masks=length.masks,
                  modulation=loop.schedule.modulation[0], out_modulation=loop.schedule.out_modulation[0])
    clean_v = decoder.run(length.pad(x), **kwargs)[:, :x.shape[1]]
    noisy_v = decoder.run(noisy, **kwargs)[:, :x.shape[1]]
    assert torch.allclose(clean_v, noisy_v, atol=1e-6)
    assert torch.isfinite(decoder.run(noisy, **kwargs)).all()


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


def test_compiled_loop_captures_one_graph_for_every_step_and_length_of_a_bucket(tiny_model, dit_inputs):
    """The step function compiles as one whole graph (fullgraph: no graph breaks), gives the eager
    numbers, and is not recompiled across steps or across real lengths inside one bucket.

    The `aot_eager` backend traces exactly what inductor would receive without generating C++:
    inductor's code generation costs minutes per cold run on a 2-core CI machine, so it is
    exercised by `bench/dit_loop.py --compile` instead of here.
    """
    from torch._dynamo.utils import counters

    x, _, context, enc = dit_inputs
    decoder = tiny_model.decoder
    cache = decoder.cross_attention_cache(enc)
    timesteps = torch.tensor([1.0, 0.5])
    torch._dynamo.reset()
    counters.clear()
    for frames in (x.shape[1], x.shape[1] - 4):
        conditioning = (cache, context[:, :frames])
        eager = DiTLoop(decoder, timesteps, frames, lambda phase, c=conditioning: c, bucket=50)
        compiled = DiTLoop(decoder, timesteps, frames, lambda phase, c=conditioning: c, compile="aot_eager")
        assert compiled.length.padded_frames == 50
        for step in range(len(timesteps)):
            assert torch.equal(compiled(x[:, :frames], step), eager(x[:, :frames], step))
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]


def test_parked_audio_codec_visits_the_device_only_during_a_call():
    model = AceStepConditionGenerationModel.from_folder(TURBO)
    assert not model.codec_parked  # parked by default only on CUDA
    latents = torch.randn(1, 10, 64)
    quantized, codes = model.tokenize(latents)
    hints = model.detokenize(quantized)
    model.park_audio_codec()
    moves = []
    original_to = torch.nn.Module.to

    def spy_to(module, *args, **kwargs):
        moves.append((type(module).__name__, str(args[0]) if args else str(kwargs.get("device"))))
        return original_to(module, *args, **kwargs)

    torch.nn.Module.to = spy_to
    try:
        parked_quantized, parked_codes = model.tokenize(latents)
        parked_hints = model.detokenize(parked_quantized)
    finally:
        torch.nn.Module.to = original_to
    assert torch.equal(parked_codes, codes) and torch.equal(parked_hints, hints)
    assert moves == [("Linear", "cpu"), ("AttentionPooler", "cpu"), ("Linear", "cpu"), ("AttentionPooler", "cpu"),
                     ("AudioDetokenizer", "cpu"), ("AudioDetokenizer", "cpu")]


@pytest.mark.parametrize("choice, device, expected", [("auto", "cpu", False), ("auto", "cuda", True),
                                                      ("on", "cpu", True), ("off", "cuda", False)])
def test_compile_choice(choice, device, expected):
    assert resolve_compile(choice, device) is expected


def test_compile_choice_names_the_bad_value():
    with pytest.raises(ValueError, match="'sometimes' is not one of auto, on, off"):
        resolve_compile("sometimes", "cpu")
