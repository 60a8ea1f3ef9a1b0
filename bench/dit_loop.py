"""DiT sampler loop: the previous per-step way against the prepared loop, side by side in one run.

Run from the repository root:

    python bench/dit_loop.py                         # tiny parity weights, CPU
    python bench/dit_loop.py --full-size --seconds 10 --steps 4   # real 2B DiT shapes, random weights
    python bench/dit_loop.py --compile               # adds the torch.compile'd loop (needs a C compiler on CPU)
    python bench/dit_loop.py --full-size --device cuda --seconds 30 --steps 8 --compile

Columns (every one runs the same turbo schedule on the same inputs):
  previous   the DiT call as the loop made it before (`previous_forward` below): RoPE tables, masks,
             both time embeddings and every layer's `scale_shift_table + time_proj` rebuilt on every
             step, K/V heads copied with `repeat_interleave` for grouped-query attention
  prepared   `DiTLoop`: those built once per length and schedule, SDPA with `enable_gqa`
  compiled   `DiTLoop` with `torch.compile` (CUDA: CUDA graphs), length bucketed to 2 s

Rows: set-up (cross-attention K/V cache, plus the prepared loop's tables), the first step, the
mean of the other steps, and "ops/step": aten operators dispatched per step (views excluded), the
count that becomes kernel launches on a GPU. On CUDA "kernels/step" counts the launched kernels
with torch.profiler. The largest difference from the previous loop is printed as max|dv|.
Wall-clock, single run; on the tiny weights the times measure overheads, not model cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.devices import resolve_device_dtype  # noqa: E402
from engine.models import acestep  # noqa: E402
from engine.models.acestep import AceStepConditionGenerationModel, AceStepConfig, DiT, DiTLoop  # noqa: E402
from engine.samplers import turbo_timesteps  # noqa: E402

PARITY_CHECKPOINTS = ROOT / "tests" / "data" / "parity" / "checkpoints"
ENCODER_TOKENS = 500  # lyrics + timbre + caption rows of a typical prompt


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched while active (views, which launch nothing, are not counted)."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func is not torch.ops.aten._unsafe_view.default:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def previous_forward(decoder: DiT, x, t, context, cross_kv_grouped):
    """One DiT call as the loop made it before `DiTLoop`, written out with the model's own modules:
    RoPE tables, boolean masks and both time embeddings rebuilt, `scale_shift_table + time_proj`
    and `1 + scale` computed per layer, K/V heads copied with `repeat_interleave` (self and cross),
    the residual stream left in the conv's transposed layout."""
    cfg = decoder.config
    groups = cfg.num_attention_heads // cfg.num_key_value_heads

    def attend(module, h, mask=None, rope=None, kv=None):
        q = module.q_norm(module._split_heads(module.q_proj(h))).transpose(1, 2)
        if kv is None:
            k = module.k_norm(module._split_heads(module.k_proj(h))).transpose(1, 2)
            v = module._split_heads(module.v_proj(h)).transpose(1, 2)
            q, k = acestep.apply_rope(q, *rope), acestep.apply_rope(k, *rope)
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        else:
            k, v = kv
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return module.o_proj(out.transpose(1, 2).reshape(*h.shape[:-1], -1))

    temb_t, proj_t = decoder.time_embed(t)
    temb_r, proj_r = decoder.time_embed_r(t - t)
    temb, tproj = temb_t + temb_r, proj_t + proj_r
    h = torch.cat([context, x], dim=-1)
    frames = h.shape[1]
    if frames % 2:
        h = F.pad(h, (0, 0, 0, 1))
    h = decoder.proj_in(h)
    tokens = h.shape[1]
    rope = acestep.rope_cos_sin(tokens, cfg.head_dim, cfg.rope_theta, h.dtype, h.device)
    masks = {}
    for index, layer in enumerate(decoder.layers):
        kind = cfg.layer_type(index)
        if kind not in masks:
            masks[kind] = acestep.build_self_attention_mask(cfg, index, tokens, h.device)
        shift, scale, gate, c_shift, c_scale, c_gate = (layer.scale_shift_table + tproj).chunk(6, dim=1)
        a = (layer.self_attn_norm(h) * (1 + scale) + shift).type_as(h)
        h = (h + attend(layer.self_attn, a, masks[kind], rope) * gate).type_as(h)
        h = h + attend(layer.cross_attn, layer.cross_attn_norm(h).type_as(h), kv=cross_kv_grouped[index])
        a = (layer.mlp_norm(h) * (1 + c_scale) + c_shift).type_as(h)
        h = (h + layer.mlp(a) * c_gate).type_as(h)
    shift, scale = (decoder.scale_shift_table + temb[:, None, :]).chunk(2, dim=1)
    h = (decoder.norm_out(h) * (1 + scale) + shift).type_as(h)
    return decoder.proj_out(h)[:, :frames]


def load_decoder(full_size: bool, layers: int | None, device, dtype) -> DiT:
    if not full_size:
        model = AceStepConditionGenerationModel.from_folder(PARITY_CHECKPOINTS / "acestep-v15-turbo", device, dtype)
        return model.decoder
    config = AceStepConfig(is_turbo=True)
    if layers:
        config = AceStepConfig(is_turbo=True, num_hidden_layers=layers)
    torch.manual_seed(0)
    with torch.device("meta"):
        decoder = DiT(config)
    decoder = decoder.to(dtype=dtype).to_empty(device=device)
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            param.fill_(1.0) if name.endswith("norm.weight") else param.normal_(0.0, 0.02)
    return decoder.eval().requires_grad_(False)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_kernels(fn, device) -> int:
    """CUDA kernels launched by one call of `fn` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        _sync(device)
    return sum(1 for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA)


@torch.no_grad()
def run_column(kind: str, decoder: DiT, frames: int, steps: int, device, dtype) -> dict:
    width = decoder.condition_embedder.in_features
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, frames, 64, generator=generator).to(device, dtype)
    context = torch.randn(1, frames, 128, generator=generator).to(device, dtype)
    enc = torch.randn(1, ENCODER_TOKENS, width, generator=generator).to(device, dtype)
    schedule = turbo_timesteps(3.0, steps).to(dtype)
    ends = torch.cat([schedule, schedule.new_zeros(1)]).float()

    _sync(device)
    started = time.perf_counter()
    cache = decoder.cross_attention_cache(enc)
    if kind == "previous":
        groups = decoder.config.num_attention_heads // decoder.config.num_key_value_heads
        grouped = [(k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)) for k, v in cache]

        def step(x, k):
            return previous_forward(decoder, x, schedule[k].expand(1).to(device), context, grouped)
    else:
        loop = DiTLoop(decoder, schedule.to(device), frames, lambda phase: (cache, context),
                       compile=kind == "compiled")
        step = loop
    _sync(device)
    setup_s = time.perf_counter() - started

    x, times, velocities = x0, [], []
    for k in range(steps):
        _sync(device)
        started = time.perf_counter()
        v = step(x, k)
        _sync(device)
        times.append(time.perf_counter() - started)
        velocities.append(v.float().cpu())
        x = x - v * float(ends[k] - ends[k + 1])

    ops = None
    if kind != "compiled":
        counter = OpCounter()
        with counter:
            step(x0, 0)
        ops = sum(counter.ops.values())
    kernels = count_kernels(lambda: step(x0, 0), device) if device.type == "cuda" else None
    return dict(setup=setup_s, first=times[0], rest=sum(times[1:]) / max(1, steps - 1), ops=ops, kernels=kernels,
                velocities=velocities)


def peak_memory_mb(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MB peak VRAM"
    import resource

    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB peak RSS"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="request length (default 20 s)")
    parser.add_argument("--steps", type=int, default=8, help="turbo steps (default 8)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--full-size", action="store_true", help="real 2B DiT shapes with random weights")
    parser.add_argument("--layers", type=int, default=None, help="with --full-size: fewer DiT layers (default 24)")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile'd loop as a third column")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    decoder = load_decoder(args.full_size, args.layers, device, dtype)
    frames = int(round(args.seconds * 25))
    kinds = ["previous", "prepared"] + (["compiled"] if args.compile else [])
    results = {kind: run_column(kind, decoder, frames, args.steps, device, dtype) for kind in kinds}

    layers = len(decoder.layers)
    size = f"2B shapes ({layers} DiT layers, random weights)" if args.full_size else "tiny parity weights"
    print(f"# DiT loop, {size}, {device} {str(dtype).replace('torch.', '')}, {args.seconds:g} s = {frames} frames, "
          f"{args.steps} steps, threads {torch.get_num_threads()}, {peak_memory_mb(device)}")
    print(f"{'':<22}" + "".join(f"{kind:>14}" for kind in kinds) + f"{'ratio':>10}")

    def row(label, key, fmt, scale=1.0):
        values = [results[kind][key] for kind in kinds]
        cells = "".join(f"{'-':>14}" if v is None else f"{v * scale:>14{fmt}}" for v in values)
        base, new = values[0], values[1]
        ratio = f"{base / new:>9.2f}x" if base and new else f"{'':>10}"
        print(f"{label:<22}{cells}{ratio}")

    row("set-up ms", "setup", ".2f", 1e3)
    row("first step ms", "first", ".2f", 1e3)
    row(f"step ms (mean of {args.steps - 1})", "rest", ".2f", 1e3)
    row("ops/step", "ops", ".0f")
    if device.type == "cuda":
        row("kernels/step", "kernels", ".0f")
    reference = results["previous"]["velocities"]
    for kind in kinds[1:]:
        diff = max(float((a - b).abs().max()) for a, b in zip(results[kind]["velocities"], reference))
        print(f"max|dv| {kind} vs previous: {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
