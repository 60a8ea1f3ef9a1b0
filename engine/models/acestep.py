"""The ACE-Step 1.5 DiT and its conditioning modules, written from the spec.

Module and parameter names mirror upstream's module tree so that `state_dict()` keys equal the
published checkpoint's keys exactly (`decoder.*`, `encoder.*`, `tokenizer.*`, `detokenizer.*`,
`null_condition_emb`). Everything here is plain PyTorch: RMSNorm, SwiGLU MLP, rotary embeddings
and grouped-query attention through `scaled_dot_product_attention` (`enable_gqa`, no K/V copies).

The sampler's fast path (gpt-fast style) sets up once what does not change between steps:
`DiT.prepare_length` builds the RoPE tables and attention masks of one (optionally bucketed)
length, `DiT.prepare_schedule` the time embeddings and per-layer modulation sums
(`scale_shift_table + time_proj`) of every timestep of the schedule, and `DiT.run` is the pure
per-step function on those prepared tensors (what `torch.compile` captures).

Shapes: latents are [B, T, 64] at 25 Hz; the DiT patchifies pairs of frames (T/2 tokens).
The model builds on `torch.device("meta")` (no data-dependent code in `__init__`), which is how
`from_folder` avoids a random initialisation of 2.4 B parameters before loading the weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.fsq import FSQQuantizer, quantize


# ----------------------------------------------------------------------------- config
@dataclass
class AceStepConfig:
    """DiT configuration; the defaults are the released 2B values (spec §3)."""

    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    encoder_hidden_size: int | None = None  # XL only; None = hidden_size
    encoder_intermediate_size: int | None = None
    encoder_num_attention_heads: int | None = None
    encoder_num_key_value_heads: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    attention_bias: bool = False
    use_sliding_window: bool = True
    sliding_window: int = 128
    layer_types: list[str] | None = None
    text_hidden_dim: int = 1024
    num_lyric_encoder_hidden_layers: int = 8
    num_timbre_encoder_hidden_layers: int = 4
    timbre_hidden_dim: int = 64
    timbre_fix_frame: int = 750
    num_attention_pooler_hidden_layers: int = 2
    audio_acoustic_hidden_dim: int = 64
    in_channels: int = 192
    patch_size: int = 2
    pool_window_size: int = 5
    fsq_dim: int = 2048
    fsq_input_levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    fsq_input_num_quantizers: int = 1
    is_turbo: bool = False
    model_version: str = ""
    is_lego_sft: bool = False
    auto_map: dict | None = None
    # XL (4B) behaviour: CLS timbre token, FSQ in float32. None = detect from the config (XL
    # configs name `modeling_acestep_v15_xl_*` and give the encoder its own, narrower width);
    # `from_folder` also sets it for `acestep-v15-xl-*` folders, upstream's own rule.
    is_xl: bool | None = None

    def __post_init__(self):
        if self.is_xl is None:
            model_file = str((self.auto_map or {}).get("AutoModel", ""))
            self.is_xl = "_xl_" in model_file or self.encoder_hidden_size not in (None, self.hidden_size)
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention"
                                for i in range(self.num_hidden_layers)]
        if self.fsq_input_num_quantizers != 1:
            raise ValueError("only one FSQ quantizer stage is supported (fsq_input_num_quantizers=1)")

    @classmethod
    def from_dict(cls, data: dict) -> AceStepConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json_file(cls, path) -> AceStepConfig:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def to_dict(self) -> dict:
        return asdict(self)

    def layer_type(self, index: int) -> str:
        """Attention type of layer `index` of any stack (encoders reuse the DiT's list by index)."""
        if index < len(self.layer_types):
            return self.layer_types[index]
        return "sliding_attention" if index % 2 == 0 else "full_attention"

    def encoder_config(self) -> AceStepConfig:
        """The config the condition encoder, tokenizer and detokenizer are built with."""
        width = self.encoder_hidden_size or self.hidden_size
        if width == self.hidden_size:
            return self
        return AceStepConfig.from_dict({
            **self.to_dict(),
            "hidden_size": width,
            "intermediate_size": self.encoder_intermediate_size or self.intermediate_size,
            "num_attention_heads": self.encoder_num_attention_heads or self.num_attention_heads,
            "num_key_value_heads": self.encoder_num_key_value_heads or self.num_key_value_heads,
            "encoder_hidden_size": None,
        })


# ----------------------------------------------------------------------------- primitives
class RMSNorm(nn.Module):
    """Qwen3-style RMSNorm: normalise in fp32, cast back, then scale in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm is one fused kernel on CUDA (the same six operators on CPU); the weight is
        # applied after the cast, in the input dtype, as upstream does.
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_cos_sin(length: int, head_dim: int, theta: float, dtype: torch.dtype,
                 device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [length, head_dim] for positions 0..length-1.

    Upstream keeps `inv_freq` as a float buffer that `.to(bfloat16)` rounds, so in bf16 the
    frequencies themselves are bf16-rounded; we reproduce that by rounding through `dtype`.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = (1.0 / (theta ** exponents)).to(dtype).float()
    positions = torch.arange(length, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on x [B, H, L, D] with tables [L, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def sliding_window_mask(length: int, window: int, device) -> torch.Tensor:
    """Bidirectional band mask [L, L]: True where |i - j| <= window."""
    idx = torch.arange(length, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window


def build_self_attention_mask(config: AceStepConfig, layer_index: int, length: int, device,
                              key_padding: torch.Tensor | None = None) -> torch.Tensor | None:
    """Boolean mask (True = attend) for one self-attention layer, or None for full attention.

    Shape [L, L] or, with a key padding mask [B, L], [B, 1, L, L].
    """
    mask = None
    if config.layer_type(layer_index) == "sliding_attention" and config.use_sliding_window:
        mask = sliding_window_mask(length, config.sliding_window, device)
    if key_padding is not None:
        keys = key_padding.bool()[:, None, None, :]
        mask = keys if mask is None else (mask[None, None] & keys)
    return mask


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask -> additive bias (0 where allowed, -inf elsewhere), the form fused SDPA kernels
    take directly (a boolean mask is converted to this on every call)."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, float("-inf"))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA with grouped-query K/V ([B, H_kv, L, D] serving [B, H, L, D] queries).

    `enable_gqa` lets the kernel index the shared K/V heads instead of copying them. On CUDA the
    fused kernel that accepts a mask (memory-efficient attention) does not take GQA in the torch
    releases we target, so masked layers there expand K/V once per call to stay on a fused kernel
    instead of falling back to the unfused maths path; unmasked layers go to flash attention.
    """
    groups = q.shape[1] // k.shape[1]
    if groups > 1 and mask is not None and q.device.type == "cuda":
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        groups = 1
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=groups > 1)


class Attention(nn.Module):
    """Grouped-query attention with per-head RMSNorm on q and k (bidirectional)."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], -1, self.head_dim)  # [B, L, H*D] -> [B, L, H, D]

    def key_value(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of `source` ([B, H_kv, L, D]), for caching."""
        k = self.k_norm(self._split_heads(self.k_proj(source))).transpose(1, 2)
        v = self._split_heads(self.v_proj(source)).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Self-attention when `kv` is None (RoPE applied), else cross-attention on cached `kv`."""
        q = self.q_norm(self._split_heads(self.q_proj(x))).transpose(1, 2)
        if kv is None:
            k = self.k_norm(self._split_heads(self.k_proj(x))).transpose(1, 2)
            v = self._split_heads(self.v_proj(x)).transpose(1, 2)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        else:
            k, v = kv
        out = attention(q, k, v, mask)
        return self.o_proj(out.transpose(1, 2).reshape(*x.shape[:-1], -1))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer used by the lyric/timbre encoders, pooler and detokenizer."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size)

    def forward(self, x, mask, rope):
        x = x + self.self_attn(self.input_layernorm(x), mask=mask, rope=rope)
        return x + self.mlp(self.post_attention_layernorm(x))


class EncoderStack(nn.Module):
    """`embed_tokens` -> N encoder layers (sliding/full per layer index) -> `norm`."""

    def __init__(self, config: AceStepConfig, in_dim: int, num_layers: int):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Linear(in_dim, config.hidden_size)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def run_layers(self, x: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        length = x.shape[1]
        rope = rope_cos_sin(length, self.config.head_dim, self.config.rope_theta, x.dtype, x.device)
        masks = {}
        for index, layer in enumerate(self.layers):
            kind = self.config.layer_type(index)
            if kind not in masks:
                masks[kind] = build_self_attention_mask(self.config, index, length, x.device, key_padding)
            x = layer(x, masks[kind], rope)
        return self.norm(x)


class LyricEncoder(EncoderStack):
    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.text_hidden_dim, config.num_lyric_encoder_hidden_layers)

    def forward(self, lyric_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.run_layers(self.embed_tokens(lyric_embeddings), key_padding=attention_mask)


class TimbreEncoder(EncoderStack):
    """Encodes packed reference latents [N, 750, 64]; the timbre token is the output at position 0.

    XL prepends `special_token` (a CLS token, 751 positions) and takes its output. The 2B models
    keep the token in the checkpoint but do not use it (upstream commented out the prepend), so
    there position 0 is the first reference frame.
    """

    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.timbre_hidden_dim, config.num_timbre_encoder_hidden_layers)
        self.special_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.use_cls_token = bool(config.is_xl)

    def forward(self, packed: torch.Tensor, order_mask: torch.Tensor, batch_size: int):
        """-> (timbre tokens [B, max_refs, D], mask [B, max_refs]) grouped by `order_mask`."""
        x = self.embed_tokens(packed)
        if self.use_cls_token:
            x = torch.cat([self.special_token.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        tokens = self.run_layers(x)[:, 0, :]
        groups = [tokens[order_mask == b] for b in range(batch_size)]
        width = max(1, max(g.shape[0] for g in groups))
        out = tokens.new_zeros(batch_size, width, tokens.shape[-1])
        mask = torch.zeros(batch_size, width, dtype=torch.bool, device=tokens.device)
        for b, group in enumerate(groups):
            out[b, :group.shape[0]] = group
            mask[b, :group.shape[0]] = True
        return out, mask


def pack_sequences(h1: torch.Tensor, h2: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor):
    """Concatenate two masked sequences and move each row's valid entries to the front.

    A stable sort keeps the original order among valid rows and among padding rows. Returns
    (hidden [B, L1+L2, D], mask [B, L1+L2] with the first `count` entries True).
    """
    hidden = torch.cat([h1, h2], dim=1)
    mask = torch.cat([m1, m2], dim=1).bool()
    order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)
    hidden = torch.gather(hidden, 1, order[..., None].expand_as(hidden))
    counts = mask.sum(dim=1, keepdim=True)
    positions = torch.arange(mask.shape[1], device=mask.device)[None, :]
    return hidden, positions < counts


class ConditionEncoder(nn.Module):
    """Caption, lyrics and timbre -> one packed sequence `[lyrics | timbre | caption]`."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.text_projector = nn.Linear(config.text_hidden_dim, config.hidden_size, bias=False)
        self.lyric_encoder = LyricEncoder(config)
        self.timbre_encoder = TimbreEncoder(config)

    def forward(self, text_hidden_states, text_attention_mask, lyric_hidden_states, lyric_attention_mask,
                refer_packed, refer_order_mask):
        text = self.text_projector(text_hidden_states)
        lyrics = self.lyric_encoder(lyric_hidden_states, lyric_attention_mask)
        timbre, timbre_mask = self.timbre_encoder(refer_packed, refer_order_mask, text.shape[0])
        hidden, mask = pack_sequences(lyrics, timbre, lyric_attention_mask, timbre_mask)
        return pack_sequences(hidden, text, mask, text_attention_mask)


class AttentionPooler(EncoderStack):
    """Pools each window of 5 frames into one vector through a prepended special token."""

    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.hidden_size, config.num_attention_pooler_hidden_layers)
        self.special_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, P, D] -> [B, N, D]."""
        b, n, p, d = x.shape
        x = self.embed_tokens(x)
        x = torch.cat([self.special_token.expand(b, n, 1, d), x], dim=2).reshape(b * n, p + 1, d)
        return self.run_layers(x)[:, 0, :].reshape(b, n, d)


class AudioTokenizer(nn.Module):
    """25 Hz latents -> 5 Hz FSQ codes."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.pool_window_size = config.pool_window_size
        self.audio_acoustic_proj = nn.Linear(config.audio_acoustic_hidden_dim, config.hidden_size)
        self.attention_pooler = AttentionPooler(config)
        self.quantizer = FSQQuantizer(config.fsq_dim, config.fsq_input_levels)
        self.quantize_in_float32 = bool(config.is_xl)

    def forward(self, x: torch.Tensor):
        """x [B, T, 64] with T a multiple of the pool window -> (quantized [B, T/5, D], indices [B, T/5, 1])."""
        b, t, c = x.shape
        x = x.reshape(b, t // self.pool_window_size, self.pool_window_size, c)
        pooled = self.attention_pooler(self.audio_acoustic_proj(x))
        if self.quantize_in_float32 and pooled.dtype != torch.float32:
            # XL runs its quantizer (projections included) in fp32 and casts the result back.
            quantizer = self.quantizer
            z = F.linear(pooled.float(), quantizer.project_in.weight.float(), quantizer.project_in.bias.float())
            codes, indices = quantize(z, quantizer.levels)
            out = F.linear(codes, quantizer.project_out.weight.float(), quantizer.project_out.bias.float())
            return out.to(pooled.dtype), indices.unsqueeze(-1)
        return self.quantizer(pooled)


class AudioDetokenizer(EncoderStack):
    """5 Hz quantized vectors -> 25 Hz latent "hints" (each code becomes 5 frames)."""

    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.hidden_size, config.num_attention_pooler_hidden_layers)
        self.pool_window_size = config.pool_window_size
        self.special_tokens = nn.Parameter(torch.zeros(1, config.pool_window_size, config.hidden_size))
        self.proj_out = nn.Linear(config.hidden_size, config.audio_acoustic_hidden_dim)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        b, n, d = quantized.shape
        p = self.pool_window_size
        x = self.embed_tokens(quantized)[:, :, None, :] + self.special_tokens[:, None, :, :]
        x = self.proj_out(self.run_layers(x.reshape(b * n, p, d)))
        return x.reshape(b, n * p, -1)


# ----------------------------------------------------------------------------- the DiT
class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of t*1000 (cos first) -> MLP -> (temb [B, D], proj [B, 6, D])."""

    def __init__(self, dim: int, in_channels: int = 256, scale: float = 1000.0):
        super().__init__()
        self.in_channels = in_channels
        self.scale = scale
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self.time_proj = nn.Linear(dim, dim * 6)

    def forward(self, t: torch.Tensor):
        half = self.in_channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = (t * self.scale)[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(t.dtype)
        temb = self.linear_2(F.silu(self.linear_1(emb)))
        return temb, self.time_proj(F.silu(temb)).unflatten(1, (6, -1))


class _Transpose12(nn.Module):
    """[B, T, C] <-> [B, C, T]; a parameter-free slot so conv keys are `proj_in.1.*` like upstream."""

    def forward(self, x):
        return x.transpose(1, 2)


class DiTLayer(nn.Module):
    def __init__(self, config: AceStepConfig):
        super().__init__()
        dim = config.hidden_size
        self.self_attn_norm = RMSNorm(dim, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.cross_attn_norm = RMSNorm(dim, config.rms_norm_eps)
        self.cross_attn = Attention(config)
        self.mlp_norm = RMSNorm(dim, config.rms_norm_eps)
        self.mlp = MLP(dim, config.intermediate_size)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 6, dim))

    def forward(self, x, modulation, mask, rope, cross_kv):
        """`modulation` [B or 1, 6, D] is `scale_shift_table + time_proj(t)` with 1 already added to
        the two scales (see `DiT.modulation`)."""
        shift, scale_1, gate, c_shift, c_scale_1, c_gate = modulation.chunk(6, dim=1)
        h = (self.self_attn_norm(x) * scale_1 + shift).type_as(x)
        x = (x + self.self_attn(h, mask=mask, rope=rope) * gate).type_as(x)
        x = x + self.cross_attn(self.cross_attn_norm(x).type_as(x), kv=cross_kv)
        h = (self.mlp_norm(x) * c_scale_1 + c_shift).type_as(x)
        return (x + self.mlp(h) * c_gate).type_as(x)


@dataclass
class DiTLength:
    """What every step at one sequence length shares: built once by `DiT.prepare_length`.

    `padded_frames` >= `frames` is the bucketed length the DiT runs at (a multiple of the patch
    size). Padding tokens are masked out as keys, and each may attend to itself so no softmax
    row is empty; rows inside the real length therefore see exactly the keys they would see
    unpadded.
    """

    frames: int
    padded_frames: int
    rope: tuple[torch.Tensor, torch.Tensor]
    masks: list[torch.Tensor | None]  # per layer; layers of one kind share one tensor

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[B, frames, C] -> [B, padded_frames, C] with zero frames at the end."""
        extra = self.padded_frames - x.shape[1]
        return F.pad(x, (0, 0, 0, extra)) if extra else x


@dataclass
class DiTSchedule:
    """Time conditioning of every step of a schedule, built once by `DiT.prepare_schedule`."""

    modulation: torch.Tensor      # [steps, layers, 1, 6, D]: scale_shift_table + time_proj per layer
    out_modulation: torch.Tensor  # [steps, 1, 2, D]: decoder.scale_shift_table + temb


def bucket_frames(frames: int, bucket: int) -> int:
    """Round a length up to a whole number of buckets (bucket <= 1 keeps it as is)."""
    return frames if bucket <= 1 else -(-frames // bucket) * bucket


class DiT(nn.Module):
    """The flow-matching transformer (`decoder.*`). Predicts the velocity v = noise - x0."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.layers = nn.ModuleList(DiTLayer(config) for _ in range(config.num_hidden_layers))
        self.proj_in = nn.Sequential(
            _Transpose12(),
            nn.Conv1d(config.in_channels, dim, kernel_size=config.patch_size, stride=config.patch_size),
            _Transpose12(),
        )
        self.time_embed = TimestepEmbedding(dim)
        self.time_embed_r = TimestepEmbedding(dim)
        self.condition_embedder = nn.Linear(config.encoder_hidden_size or dim, dim)
        self.norm_out = RMSNorm(dim, config.rms_norm_eps)
        self.proj_out = nn.Sequential(
            _Transpose12(),
            nn.ConvTranspose1d(dim, config.audio_acoustic_hidden_dim, kernel_size=config.patch_size,
                               stride=config.patch_size),
            _Transpose12(),
        )
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 2, dim))

    def cross_attention_cache(self, encoder_hidden_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys/values of every cross-attention layer; compute once per conditioning, reuse per step.

        The DiT ignores the encoder padding mask (upstream drops it), so no mask is kept.
        """
        enc = self.condition_embedder(encoder_hidden_states)
        return [layer.cross_attn.key_value(enc) for layer in self.layers]

    # ------------------------------------------------------------------ set up once
    def modulation(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t [N] -> (per-layer modulation [layers, N, 6, D], output modulation [N, 2, D]).

        Rows are (shift, 1 + scale, gate, shift, 1 + scale, gate) per layer and (shift, 1 + scale)
        for the output: the `1 +` that upstream adds on every step is added here once (same dtype,
        same rounding).
        """
        temb_t, proj_t = self.time_embed(t)
        temb_r, proj_r = self.time_embed_r(t - t)  # inference always uses r = t
        temb, tproj = temb_t + temb_r, proj_t + proj_r
        layers = torch.stack([layer.scale_shift_table + tproj for layer in self.layers])
        layers[:, :, 1] += 1
        layers[:, :, 4] += 1
        out = self.scale_shift_table + temb[:, None, :]
        out[:, 1] += 1
        return layers, out

    def prepare_schedule(self, timesteps: torch.Tensor) -> DiTSchedule:
        """Modulation of every step of `timesteps` [steps] (values already in the model dtype)."""
        weight = self.scale_shift_table
        layers, out = self.modulation(timesteps.to(device=weight.device, dtype=weight.dtype))
        # Contiguous per step, so a step's slice has the same strides whatever the number of steps
        # (a compiled step would otherwise be re-traced for every schedule length).
        return DiTSchedule(layers.transpose(0, 1)[:, :, None].contiguous(), out[:, None].contiguous())

    def prepare_length(self, frames: int, bucket: int = 0) -> DiTLength:
        """RoPE tables and attention masks for `frames` latent frames, padded up to a multiple of
        `bucket` frames (0 or 1: no bucketing; then full-attention layers need no mask at all)."""
        patch = self.config.patch_size
        padded = bucket_frames(bucket_frames(frames, bucket), patch)
        tokens, real = padded // patch, -(-frames // patch)
        weight = self.scale_shift_table
        device, dtype = weight.device, weight.dtype
        rope = rope_cos_sin(tokens, self.config.head_dim, self.config.rope_theta, dtype, device)
        idx = torch.arange(tokens, device=device)
        keys = (idx < real)[None, :] | torch.eye(tokens, dtype=torch.bool, device=device)
        by_kind: dict[str, torch.Tensor | None] = {}
        masks = []
        for index in range(len(self.layers)):
            kind = self.config.layer_type(index)
            if kind not in by_kind:
                allowed = build_self_attention_mask(self.config, index, tokens, device)
                if tokens > real:
                    allowed = keys if allowed is None else allowed & keys
                elif bucket > 1 and allowed is None:
                    allowed = keys  # keep the kind of input stable across lengths of one bucket
                by_kind[kind] = None if allowed is None else additive_mask(allowed, dtype)
            masks.append(by_kind[kind])
        return DiTLength(frames, padded, rope, masks)

    # ------------------------------------------------------------------ per step
    def run(self, x: torch.Tensor, context_latents: torch.Tensor, cross_kv: list[tuple[torch.Tensor, torch.Tensor]],
            rope: tuple[torch.Tensor, torch.Tensor], masks: list[torch.Tensor | None], modulation: torch.Tensor,
            out_modulation: torch.Tensor) -> torch.Tensor:
        """One DiT call on prepared inputs (the function `torch.compile` captures).

        x [B, F, 64] and context [B, F, 128] already padded to the prepared length F; modulation
        [layers, B or 1, 6, D] and out_modulation [B or 1, 2, D] from `modulation`. -> [B, F, 64].
        """
        # The conv leaves h transposed in memory; one copy makes every later matmul a plain one.
        h = self.proj_in(torch.cat([context_latents, x], dim=-1)).contiguous()
        for index, layer in enumerate(self.layers):
            h = layer(h, modulation[index], masks[index], rope, cross_kv[index])
        shift, scale_1 = out_modulation.chunk(2, dim=1)
        h = (self.norm_out(h) * scale_1 + shift).type_as(h)
        return self.proj_out(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context_latents: torch.Tensor,
                cross_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One self-contained call: x [B, T, 64] noisy latents, t [B] timesteps, context [B, T, 128]
        -> velocity [B, T, 64]. Sets up RoPE, masks and time conditioning on every call; the
        sampler uses `prepare_length` / `prepare_schedule` / `run` instead."""
        length = self.prepare_length(x.shape[1])
        modulation, out_modulation = self.modulation(t)
        v = self.run(length.pad(x), length.pad(context_latents), cross_kv, length.rope, length.masks,
                     modulation, out_modulation)
        return v[:, :length.frames]


# ----------------------------------------------------------------------------- the step loop
BUCKET_FRAMES = 50  # 2 s of latent frames (25 DiT tokens): lengths are rounded up to this when compiled
COMPILE_CHOICES = ("auto", "on", "off")
# phase -> (cross-attention K/V per layer, context latents [B, T, 128]) for that conditioning phase
PhaseConditioning = Callable[[int], tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]]


def resolve_compile(choice: str | bool | None, device) -> bool:
    """`--compile auto|on|off` -> whether to compile the DiT step (auto: on for CUDA only)."""
    if isinstance(choice, bool):
        return choice
    choice = "auto" if choice is None else str(choice).lower()
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"compile: '{choice}' is not one of auto, on, off")
    return choice == "on" or (choice == "auto" and torch.device(device).type == "cuda")


def compiled_run(decoder: DiT, backend: str = "inductor"):
    """`decoder.run` under `torch.compile`, built once per DiT and backend.

    CUDA: mode "reduce-overhead" (CUDA graphs: a step is one graph replay instead of ~2,000
    launches). CPU: the default inductor mode. Shapes are static within a length bucket; the
    encoder length varies with the prompt, and after the second distinct length dynamo marks
    that dimension dynamic (one recompile, which `warm_up` pays at engine start).
    """
    cache = decoder.__dict__.setdefault("_compiled_runs", {})
    if backend not in cache:
        cuda = decoder.scale_shift_table.device.type == "cuda"
        mode = "reduce-overhead" if cuda and backend == "inductor" else None
        cache[backend] = torch.compile(decoder.run, backend=backend, mode=mode)
    return cache[backend]


class DiTLoop:
    """The DiT bound to one schedule, one length and its conditioning phases: `loop(x, k, phase)`.

    Everything that does not change between steps is built here once: RoPE tables and masks
    (`DiTLength`), the modulation of every step (`DiTSchedule`), and each phase's padded context.
    A step then only pads x, runs `DiT.run` (compiled when asked) and crops; there is no host
    synchronisation in it.
    """

    def __init__(self, decoder: DiT, timesteps: torch.Tensor, frames: int, conditioning: PhaseConditioning,
                 compile: bool | str = False, bucket: int | None = None):
        """`compile`: True for `torch.compile` (inductor), or a backend name; `bucket`: frames to round
        the length up to (default: `BUCKET_FRAMES` when compiled, none in eager mode)."""
        self.decoder = decoder
        self.schedule = decoder.prepare_schedule(timesteps)
        self.length = decoder.prepare_length(frames, BUCKET_FRAMES if bucket is None and compile else bucket or 0)
        self.conditioning = conditioning
        backend = compile if isinstance(compile, str) else "inductor"
        self.run = compiled_run(decoder, backend) if compile else decoder.run
        self.cuda_graphs = backend == "inductor" and bool(compile) and decoder.scale_shift_table.device.type == "cuda"
        self._phases: dict[int, tuple[list, torch.Tensor]] = {}

    def _phase(self, phase: int):
        if phase not in self._phases:
            cross_kv, context = self.conditioning(phase)
            self._phases[phase] = (cross_kv, self.length.pad(context))
        return self._phases[phase]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, step: int, phase: int = 0) -> torch.Tensor:
        """Velocity [B, T, 64] of x [B, T, 64] at step `step` of the schedule."""
        cross_kv, context = self._phase(phase)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        v = self.run(self.length.pad(x), context, cross_kv, self.length.rope, self.length.masks,
                     self.schedule.modulation[step], self.schedule.out_modulation[step])
        v = v[:, :self.length.frames]
        return v.clone() if self.cuda_graphs else v  # graph outputs are overwritten by the next replay


@torch.no_grad()
def warm_up(decoder: DiT, frames: list[int], compile: bool, steps: int = 2, rows: int = 1) -> None:
    """Run the step loop on dummy inputs for each length so compilation (and CUDA-graph capture)
    happens at engine start, not on the musician's first request. Two encoder lengths per length
    let dynamo settle on a graph that is dynamic in the prompt length."""
    if not compile:
        return
    weight = decoder.scale_shift_table
    device, dtype = weight.device, weight.dtype
    channels = decoder.config.audio_acoustic_hidden_dim
    width = decoder.condition_embedder.in_features
    timesteps = torch.linspace(1.0, 0.5, steps, device=device, dtype=dtype)
    for count in frames:
        for enc_length in (64, 96):
            enc = torch.zeros(rows, enc_length, width, device=device, dtype=dtype)
            cross_kv = decoder.cross_attention_cache(enc)
            context = torch.zeros(rows, count, 2 * channels, device=device, dtype=dtype)
            loop = DiTLoop(decoder, timesteps, count, lambda phase, kv=cross_kv, ctx=context: (kv, ctx),
                           compile=True)
            x = torch.zeros(rows, count, channels, device=device, dtype=dtype)
            for k in range(steps):
                loop(x, k)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- top level
class AceStepConditionGenerationModel(nn.Module):
    """DiT + condition encoder + audio tokenizer/detokenizer + CFG null embedding."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.config = config
        enc_config = config.encoder_config()
        self.decoder = DiT(config)
        self.encoder = ConditionEncoder(enc_config)
        self.tokenizer = AudioTokenizer(enc_config)
        self.detokenizer = AudioDetokenizer(enc_config)
        self.null_condition_emb = nn.Parameter(torch.zeros(1, 1, enc_config.hidden_size))
        self.silence_latent: torch.Tensor | None = None  # [1, 15000, 64], set by from_folder
        self.codec_parked = False  # see park_audio_codec

    def park_audio_codec(self) -> None:
        """Keep the FSQ tokenizer's pooler and the detokenizer (0.4 GB at 2B) in CPU memory.

        Only covers use them; they visit the model's device for the duration of a `tokenize` or
        `detokenize` call. The quantizer's two small projections stay put, so LM codes can be
        turned into vectors on the device. `from_folder` parks them on CUDA.
        """
        for module in self._codec_modules():
            module.to("cpu")
        self.codec_parked = True

    def _codec_modules(self) -> list[nn.Module]:
        return [self.tokenizer.audio_acoustic_proj, self.tokenizer.attention_pooler, self.detokenizer]

    @contextmanager
    def _codec_visit(self, *modules: nn.Module):
        """Bring parked codec modules to the model's device for one call, then park them again."""
        if not self.codec_parked:
            yield
            return
        device = self.null_condition_emb.device
        for module in modules:
            module.to(device)
        try:
            yield
        finally:
            for module in modules:
                module.to("cpu")

    @classmethod
    def from_folder(cls, path, device="cpu", dtype=torch.float32) -> AceStepConditionGenerationModel:
        """Build from a published DiT folder (config.json, model.safetensors or the XL shards with
        model.safetensors.index.json, silence_latent.pt)."""
        from engine.checkpoints import dit_weights_path, load_safetensors_checked, validate_folder
        from engine.types import CheckpointError

        folder = validate_folder(path, "dit")
        try:
            data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            if folder.name.startswith("acestep-v15-xl-"):
                data.setdefault("is_xl", True)
            config = AceStepConfig.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{folder / 'config.json'}: not a valid ACE-Step config ({exc})") from None
        with torch.device("meta"):
            model = cls(config)
        model = model.to(dtype=dtype).to_empty(device=device)
        load_safetensors_checked(dit_weights_path(folder), model)
        model.eval().requires_grad_(False)
        model.silence_latent = load_silence_latent(folder / "silence_latent.pt", device, dtype)
        if torch.device(device).type == "cuda":
            model.park_audio_codec()
        return model

    @torch.no_grad()
    def encode_conditions(self, text_hidden_states, text_attention_mask, lyric_hidden_states,
                          lyric_attention_mask, refer_packed, refer_order_mask):
        """-> (encoder_hidden_states [B, L, D], encoder_attention_mask [B, L])."""
        return self.encoder(text_hidden_states, text_attention_mask, lyric_hidden_states,
                            lyric_attention_mask, refer_packed, refer_order_mask)

    @torch.no_grad()
    def tokenize(self, latents: torch.Tensor):
        """latents [B, T, 64] -> (quantized [B, ceil(T/5), D], indices [B, ceil(T/5), 1]).

        T is padded to a multiple of the pool window with the first frames of the silence latent.
        """
        window = self.config.pool_window_size
        remainder = latents.shape[1] % window
        if remainder:
            pad = self.silence_latent[:, :window - remainder].to(latents).expand(latents.shape[0], -1, -1)
            latents = torch.cat([latents, pad], dim=1)
        with self._codec_visit(self.tokenizer.audio_acoustic_proj, self.tokenizer.attention_pooler):
            return self.tokenizer(latents)

    @torch.no_grad()
    def detokenize(self, quantized: torch.Tensor) -> torch.Tensor:
        with self._codec_visit(self.detokenizer):
            return self.detokenizer(quantized)

    @torch.no_grad()
    def context_latents(self, src_latents: torch.Tensor, chunk_masks: torch.Tensor, is_covers: torch.Tensor,
                        lm_hints: torch.Tensor | None = None) -> torch.Tensor:
        """`[src (FSQ hints where is_covers) | chunk mask]` -> [B, T, 128].

        Hints are only computed when some item is a cover (upstream always computes and discards them).
        """
        if bool(is_covers.any()):
            if lm_hints is None:
                lm_hints = self.detokenize(self.tokenize(src_latents)[0])
            lm_hints = lm_hints[:, :src_latents.shape[1], :].to(src_latents)
            src_latents = torch.where(is_covers[:, None, None], lm_hints, src_latents)
        return torch.cat([src_latents, chunk_masks.to(src_latents.dtype)], dim=-1)


def load_silence_latent(path, device, dtype) -> torch.Tensor:
    """silence_latent.pt holds [1, 64, 15000]; we use it as [1, 15000, 64]."""
    from engine.types import CheckpointError

    try:
        tensor = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: unreadable silence latent ({exc.__class__.__name__}); "
                              f"re-run `ace-companion download`") from None
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or tensor.shape[1] != 64:
        raise CheckpointError(f"{path}: expected a [1, 64, frames] tensor, got "
                              f"{getattr(tensor, 'shape', type(tensor).__name__)}")
    return tensor.transpose(1, 2).contiguous().to(device=device, dtype=dtype)
