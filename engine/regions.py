"""Region maths for repaint, continuation (outpaint) and lego: padding, frame ranges, length rule,
the one edge ramp, the repaint schedule and the waveform splice.

The units and upstream's conventions (a time `s` is latent frame `int(s * 48000 // 1920)`, what a
negative `repainting_end` means, how an outpaint pads the source) live in `engine.units`; this
module adds the torch side. The same ramp serves the latent boundary blend (in frames) and the
waveform splice (in samples).
"""

from __future__ import annotations

import torch

from engine.request import RequestError
from engine.units import RegionPlan, region_length_problem, seconds_to_frame, seconds_to_samples


def pad_source(wave: torch.Tensor, plan: RegionPlan) -> torch.Tensor:
    """Zero-pad a [channels, samples] source as the plan says."""
    if plan.left_pad_samples == 0 and plan.right_pad_samples == 0:
        return wave
    return torch.nn.functional.pad(wave, (plan.left_pad_samples, plan.right_pad_samples))


def frame_range(start_s: float, end_s: float, total_frames: int) -> tuple[int, int]:
    """Latent frames [start, end) of a region, clamped so that at least one frame is inside."""
    start_frame = max(0, min(seconds_to_frame(start_s), total_frames - 1))
    end_frame = max(start_frame + 1, min(seconds_to_frame(end_s), total_frames))
    return start_frame, end_frame


def check_region_length(plan: RegionPlan, source_s: float, enforce_limits: bool = True) -> None:
    """Refuse an empty region always, and one outside 3..90 s when `enforce_limits` (a `RequestError`)."""
    if plan.length_s <= 0:
        raise RequestError("repainting_start", f"the region starts at {plan.start_s:.2f} s, at or after the end "
                                               f"of the {source_s:.2f} s source")
    problem = region_length_problem(plan.length_s) if enforce_limits else None
    if problem:
        raise RequestError("repainting_end", problem.replace("the region", "the repaint region", 1))


def ramp_mask(length: int, start: int, end: int, ramp: int) -> torch.Tensor:
    """Float mask of `length` entries: 1 in [start, end), 0 far outside, and linear ramps of `ramp`
    entries just outside each edge (`linspace(0, 1, ramp + 2)[1:-1]`, cut at the array bounds).

    Upstream uses this shape twice: for the boundary blend of repaint latents (entries are frames)
    and for the waveform splice (entries are samples).
    """
    mask = torch.zeros(length, dtype=torch.float32)
    mask[start:end] = 1.0
    if ramp <= 0:
        return mask
    lead_from = max(start - ramp, 0)
    if start > lead_from:
        mask[lead_from:start] = torch.linspace(0.0, 1.0, start - lead_from + 2)[1:-1]
    tail_to = min(end + ramp, length)
    if tail_to > end:
        mask[end:tail_to] = torch.linspace(1.0, 0.0, tail_to - end + 2)[1:-1]
    return mask


def repaint_schedule(mode: str = "balanced", strength: float = 0.5) -> tuple[float, int, float]:
    """(injection_ratio, crossfade_frames, waveform crossfade seconds) for a repaint mode (spec §8.4).

    balanced: (1 - s, round(25 (1 - s)), 0.05 (1 - s)) -> (0.5, 12, 0.025) at the default s = 0.5
    (Python's round, i.e. banker's rounding); conservative: (1, 25, 0.05); aggressive: (0, 0, 0).
    """
    if mode == "conservative":
        return 1.0, 25, 0.05
    if mode == "aggressive":
        return 0.0, 0, 0.0
    if mode != "balanced":
        raise ValueError(f"unknown repaint_mode {mode!r}")
    keep = 1.0 - strength
    return keep, round(25 * keep), 0.05 * keep


def splice_samples(start_s: float, end_s: float, common_samples: int) -> tuple[int, int]:
    """Sample range [start, end) of a splice region, clamped to the first `common_samples`."""
    start = max(0, min(seconds_to_samples(start_s), common_samples))
    return start, max(start, min(seconds_to_samples(end_s), common_samples))


def splice_waveform(generated: torch.Tensor, source: torch.Tensor, start_s: float, end_s: float,
                    crossfade_s: float) -> torch.Tensor:
    """Put the original waveform back outside the repaint region, with linear crossfades.

    `generated` is [..., channels, N] (decoded audio), `source` the (padded) source [channels, M].
    Only the first min(N, M) samples are spliced; anything after stays generated. A region
    covering the whole signal returns `generated` unchanged.
    """
    common = min(generated.shape[-1], source.shape[-1])
    start, end = splice_samples(start_s, end_s, common)
    if start == 0 and end >= common:
        return generated
    mask = ramp_mask(common, start, end, seconds_to_samples(crossfade_s)).to(generated.device, generated.dtype)
    head = generated[..., :common]
    src = source[..., :common].to(generated.device, generated.dtype)
    spliced = mask * head + (1.0 - mask) * src
    if generated.shape[-1] > common:
        spliced = torch.cat([spliced, generated[..., common:]], dim=-1)
    return spliced
