"""Time-region arithmetic for repaint, continuation (outpaint) and lego, plus the waveform splice.

Conventions follow upstream ACE-Step 1.5 exactly, float truncation included, because the parity
fixtures depend on them:

* a time `s` (seconds) maps to latent frame `int(s * 48000 // 1920)` (25 frames per second);
* a region that starts before 0 pads the source on the left with zeros, one that ends after the
  source pads it on the right with `int((end - source_seconds) * 48000)` zero samples; both region
  ends are then shifted by the left padding.

`repaint_mode` / `repaint_strength` resolve to numbers in `engine.samplers.repaint_schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.request import RequestError

SAMPLE_RATE = 48000
HOP = 1920  # waveform samples per latent frame
MIN_REGION_SECONDS = 3.0
MAX_REGION_SECONDS = 90.0


def seconds_to_frame(seconds: float) -> int:
    """Latent frame index of a time in seconds (upstream's `int(s * 48000 // 1920)`)."""
    return int(seconds * SAMPLE_RATE // HOP)


@dataclass(frozen=True)
class RegionPlan:
    """Where a repaint region lies once the source has been padded for outpainting."""

    left_pad: int       # zero samples added before the source
    right_pad: int      # zero samples added after the source
    start_s: float      # region start in the padded timeline (seconds)
    end_s: float        # region end in the padded timeline (seconds)

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


def plan_region(start: float, end: float | None, source_samples: int) -> RegionPlan:
    """Padding and shifted bounds for a region `start`..`end` (seconds) on a source.

    `end` None or negative means "to the end of the source". A negative `start`
    extends the source to the left, an `end` after the source extends it to the right.
    """
    source_seconds = source_samples / SAMPLE_RATE
    actual_end = source_seconds if end is None or end < 0 else end
    left_seconds = max(0.0, -start)
    right_seconds = max(0.0, actual_end - source_seconds)
    return RegionPlan(
        left_pad=int(left_seconds * SAMPLE_RATE),
        right_pad=int(right_seconds * SAMPLE_RATE),
        start_s=start + left_seconds,
        end_s=actual_end + left_seconds,
    )


def pad_source(wave: torch.Tensor, plan: RegionPlan) -> torch.Tensor:
    """Zero-pad a [channels, samples] source as the plan says."""
    if plan.left_pad == 0 and plan.right_pad == 0:
        return wave
    return torch.nn.functional.pad(wave, (plan.left_pad, plan.right_pad))


def frame_range(start_s: float, end_s: float, total_frames: int) -> tuple[int, int]:
    """Latent frames [start, end) of a region, clamped so that at least one frame is inside."""
    start_f = seconds_to_frame(start_s)
    end_f = seconds_to_frame(end_s)
    start_f = max(0, min(start_f, total_frames - 1))
    end_f = max(start_f + 1, min(end_f, total_frames))
    return start_f, end_f


def check_region_length(plan: RegionPlan, source_seconds: float) -> None:
    """Refuse repaint regions shorter than 3 s or longer than 90 s (a clear `RequestError`)."""
    length = plan.length_s
    if length <= 0:
        raise RequestError("repainting_start", f"the region starts at {plan.start_s:.2f} s, at or after the end "
                                               f"of the {source_seconds:.2f} s source")
    if length < MIN_REGION_SECONDS:
        raise RequestError("repainting_end", f"the repaint region is {length:.2f} s long; it must be at least "
                                             f"{MIN_REGION_SECONDS:.0f} s")
    if length > MAX_REGION_SECONDS:
        raise RequestError("repainting_end", f"the repaint region is {length:.2f} s long; it must be at most "
                                             f"{MAX_REGION_SECONDS:.0f} s (repaint longer spans in several passes)")


def ramp_mask(length: int, start: int, end: int, ramp: int) -> torch.Tensor:
    """Float mask of `length`: 1 in [start, end), 0 far outside, linear ramps of `ramp` entries
    just outside each edge (`linspace(0, 1, ramp + 2)[1:-1]`, cut at the array bounds)."""
    mask = torch.zeros(length, dtype=torch.float32)
    mask[start:end] = 1.0
    if ramp <= 0:
        return mask
    lead_from = max(start - ramp, 0)
    if start - lead_from > 0:
        mask[lead_from:start] = torch.linspace(0.0, 1.0, start - lead_from + 2)[1:-1]
    tail_to = min(end + ramp, length)
    if tail_to - end > 0:
        mask[end:tail_to] = torch.linspace(1.0, 0.0, tail_to - end + 2)[1:-1]
    return mask


def splice_waveform(generated: torch.Tensor, source: torch.Tensor, start_s: float, end_s: float,
                    crossfade_s: float) -> torch.Tensor:
    """Put the original waveform back outside the repaint region, with linear crossfades.

    `generated` is [channels, N] (decoded audio), `source` the (padded) source [channels, M].
    Only the first min(N, M) samples are spliced; anything after stays generated. A region
    covering the whole signal returns `generated` unchanged.
    """
    common = min(generated.shape[-1], source.shape[-1])
    start = max(0, min(int(start_s * SAMPLE_RATE), common))
    end = max(start, min(int(end_s * SAMPLE_RATE), common))
    if start == 0 and end >= common:
        return generated
    mask = ramp_mask(common, start, end, int(crossfade_s * SAMPLE_RATE)).to(generated.device, generated.dtype)
    head = generated[..., :common]
    src = source[..., :common].to(generated.device, generated.dtype)
    spliced = mask * head + (1.0 - mask) * src
    if generated.shape[-1] > common:
        spliced = torch.cat([spliced, generated[..., common:]], dim=-1)
    return spliced
