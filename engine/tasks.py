"""Per-task DiT inputs: what each task feeds the sampler (spec §8).

`build_conditioning(pipeline, request)` returns a `Conditioning`: the prompt strings, source
latents, chunk masks, cover flags, packed timbre references, and the optional repaint / cover
switch inputs. The pipeline then does the parts every task shares (tokenise, encode, sample,
decode). text2music is implemented here; the source-audio tasks are added by the `tasks` work
and until then raise a clear EngineError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from engine.prompts import request_prompts
from engine.request import GenerationRequest
from engine.samplers import RepaintSettings
from engine.types import EngineError

if TYPE_CHECKING:  # pragma: no cover
    from engine.pipeline import Pipeline

SAMPLE_RATE = 48000
HOP = 1920
MIN_FRAMES = 128            # upstream raises every text2music length to >= 5.12 s
FALLBACK_DURATION_S = 120.0  # generated length when the request has no duration


@dataclass
class Conditioning:
    """Everything task-specific the DiT needs, for a batch of B items and T latent frames."""

    caption_prompts: list[str]           # one per item
    lyric_prompts: list[str]             # one per item
    src_latents: torch.Tensor            # [B, T, 64] before the cover-hint replacement
    chunk_masks: torch.Tensor            # [B, T, 64] 0/1
    is_covers: torch.Tensor              # [B] bool
    refer_packed: torch.Tensor           # [N_ref, 750, 64] timbre references
    refer_order_mask: torch.Tensor       # [N_ref] int64 batch index of each reference
    frames: int                          # T
    metas_duration_s: float | None       # what the metas say (None -> "30 seconds")
    lm_hints: torch.Tensor | None = None          # [B, >=T, 64] precomputed 25 Hz hints (codes)
    repaint: RepaintSettings | None = None        # step injection + boundary blend
    non_cover_caption_prompts: list[str] | None = None  # cover strength < 1: prompts after the switch
    cover_strength: float = 1.0
    # Optional hook on the decoded waveform [B, 2, N] before normalisation (repaint splice).
    wave_postprocess: Callable[[torch.Tensor], torch.Tensor] | None = None
    dump: dict[str, Any] = field(default_factory=dict)  # extra parity tensors (target_latents, ...)


def text2music_frames(duration_s: float | None) -> tuple[int, float | None]:
    """(T, metas duration) for text2music: T = int(round(d, 1) * 48000) // 1920, at least 128."""
    if duration_s is None or duration_s <= 0:
        generate_s, metas_s = FALLBACK_DURATION_S, None
    else:
        generate_s, metas_s = duration_s, duration_s
    frames = int(round(generate_s, 1) * SAMPLE_RATE) // HOP
    return max(frames, MIN_FRAMES), metas_s


def silence_timbre(pipeline: "Pipeline", batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """No reference audio: each item packs `silence_latent[:, :750]`, order mask 0..B-1."""
    silence = pipeline.silence_latent
    fix = pipeline.dit.config.timbre_fix_frame
    packed = silence[:, :fix].expand(batch_size, -1, -1).contiguous()
    return packed, torch.arange(batch_size, dtype=torch.long, device=silence.device)


def build_text2music(pipeline: "Pipeline", request: GenerationRequest, batch_size: int) -> Conditioning:
    frames, metas_s = text2music_frames(request.duration)
    silence = pipeline.silence_latent
    if frames > silence.shape[1]:
        raise EngineError(f"duration: {frames / 25:.0f} s is longer than the silence latent "
                          f"({silence.shape[1] / 25:.0f} s) this checkpoint supports")
    caption, lyrics = request_prompts(request, metas_s)
    src = silence[:, :frames].expand(batch_size, -1, -1).contiguous()
    refer_packed, refer_order = silence_timbre(pipeline, batch_size)
    return Conditioning(
        caption_prompts=[caption] * batch_size,
        lyric_prompts=[lyrics] * batch_size,
        src_latents=src,
        chunk_masks=torch.ones_like(src),
        is_covers=torch.zeros(batch_size, dtype=torch.bool, device=src.device),
        refer_packed=refer_packed,
        refer_order_mask=refer_order,
        frames=frames,
        metas_duration_s=metas_s,
    )


def _not_implemented(task: str):
    def build(pipeline, request, batch_size, progress=None, cancel=None):
        raise EngineError(f"task {task} not implemented yet")
    return build


# task_type -> builder(pipeline, request, batch_size, progress, cancel) -> Conditioning
BUILDERS: dict[str, Callable[..., Conditioning]] = {
    "text2music": lambda pipeline, request, batch_size, progress=None, cancel=None:
        build_text2music(pipeline, request, batch_size),
    "repaint": _not_implemented("repaint"),
    "cover": _not_implemented("cover"),
    "lego": _not_implemented("lego"),
    "extract": _not_implemented("extract"),
    "complete": _not_implemented("complete"),
}


def build_conditioning(pipeline: "Pipeline", request: GenerationRequest, batch_size: int,
                       progress=None, cancel=None) -> Conditioning:
    if request.task_type == "text2music" and request.audio_codes:
        builder = BUILDERS["cover"]  # codes turn text2music into a cover (spec §5.3)
    else:
        builder = BUILDERS.get(request.task_type)
    if builder is None:
        raise EngineError(f"task {request.task_type} is not supported")
    return builder(pipeline, request, batch_size, progress, cancel)
