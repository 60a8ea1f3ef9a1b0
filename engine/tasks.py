"""Per-task DiT inputs: what each task feeds the sampler (spec §8).

`build_conditioning(ctx, request, batch_size)` returns a `Conditioning`: one or two `Phase`s (the
prompts, source latents, chunk masks, cover flags and hints the DiT sees, and from which fraction
of the schedule each applies), the packed timbre references, and the optional repaint inputs and
waveform splice. The pipeline then does what every task shares (encode text, sample, decode).

Tasks see the models only through a narrow `TaskContext` (encode audio, decode codes, tokenize
latents, the silence latent, whether the DiT is turbo, the region-limit rule, device and dtype),
so this module never imports the pipeline. The audio-side rules live in `engine.task_inputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.prompts import TEXT2MUSIC_INSTRUCTION, request_prompts
from engine.regions import repaint_schedule
from engine.request import BASE_ONLY_TASKS, GenerationRequest
from engine.samplers import RepaintSettings
from engine.task_inputs import DecodeCodesFn, EncodeFn, prepare_reference, prepare_source
from engine.types import Cancelled, EngineError, ProgressEvent
from engine.units import FRAMES_PER_S, HOP_SAMPLES, MIN_FRAMES, seconds_to_samples

FALLBACK_DURATION_S = 120.0  # generated length when the request has no duration

# latents [B, T, 64] -> (25 Hz hints [B, T', 64], 5 Hz quantized [B, N, D], codes [B, N, 1])
TokenizeFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class TaskContext:
    """What a task may use of the loaded models. `encode_source` may serve cached latents."""

    encode_source: EncodeFn            # source waveform [2, S] -> latents [T, 64]
    encode_audio: EncodeFn             # any other waveform (reference montage) -> latents [T, 64]
    decode_codes: DecodeCodesFn        # FSQ codes -> 25 Hz hints [1, 5N, 64]
    tokenize_latents: TokenizeFn
    silence_latent: torch.Tensor       # [1, F, 64]
    timbre_frames: int                 # frames of one packed timbre reference (750)
    is_turbo: bool
    dit_name: str
    enforce_region_limits: bool
    device: torch.device
    dtype: torch.dtype


@dataclass
class Phase:
    """The DiT conditioning for the steps from `int(steps * from_fraction)` on."""

    caption_prompts: list[str]           # one per item
    lyric_prompts: list[str]             # one per item
    src_latents: torch.Tensor            # [B, T, 64] before the cover-hint replacement
    chunk_masks: torch.Tensor            # [B, T, 64] 0/1
    is_covers: torch.Tensor              # [B] bool
    lm_hints: torch.Tensor | None = None  # [B, >=T, 64] precomputed 25 Hz hints (codes)
    from_fraction: float = 0.0


@dataclass
class Splice:
    """Repaint: the output is `wave` outside [start_s, end_s), crossfaded over `crossfade_s`."""

    wave: torch.Tensor                   # [2, S] padded source waveform
    start_s: float
    end_s: float
    crossfade_s: float

    def generated_samples(self, total_samples: int) -> tuple[int, int]:
        """Samples [lo, hi) of the output where the generated audio is heard (region plus ramps)."""
        ramp = seconds_to_samples(self.crossfade_s)
        lo = max(0, seconds_to_samples(self.start_s) - ramp)
        hi = min(total_samples, seconds_to_samples(self.end_s) + ramp)
        return lo, max(lo, hi)

    def generated_frames(self, total_frames: int) -> tuple[int, int]:
        lo, hi = self.generated_samples(total_frames * HOP_SAMPLES)
        return lo // HOP_SAMPLES, min(total_frames, -(-hi // HOP_SAMPLES))


@dataclass
class Conditioning:
    """Everything task-specific the DiT needs, for a batch of B items and T latent frames."""

    phases: list[Phase]                  # phase 0 first; a cover with strength < 1 adds a text2music phase
    refer_packed: torch.Tensor           # [N_ref, 750, 64] timbre references
    refer_order_mask: torch.Tensor       # [N_ref] int64 batch index of each reference
    frames: int                          # T
    metas_duration_s: float | None       # what the metas say (None -> "30 seconds")
    repaint: RepaintSettings | None = None  # step injection + boundary blend
    splice: Splice | None = None            # waveform splice after decoding (repaint, not aggressive)
    dump: dict[str, Any] = field(default_factory=dict)  # extra parity tensors (target_latents, ...)


def text2music_frames(duration_s: float | None) -> tuple[int, float | None]:
    """(T, metas duration) for text2music: T = int(round(d, 1) * 48000) // 1920, at least 128."""
    if duration_s is None or duration_s <= 0:
        generate_s, metas_s = FALLBACK_DURATION_S, None
    else:
        generate_s, metas_s = duration_s, duration_s
    frames = seconds_to_samples(round(generate_s, 1)) // HOP_SAMPLES
    return max(frames, MIN_FRAMES), metas_s


def silence_timbre(ctx: TaskContext, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """No reference audio: each item packs `silence_latent[:, :750]`, order mask 0..B-1."""
    silence = ctx.silence_latent
    packed = silence[:, :ctx.timbre_frames].expand(batch_size, -1, -1).contiguous()
    return packed, torch.arange(batch_size, dtype=torch.long, device=silence.device)


def _batch(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    return tensor.expand(batch_size, *tensor.shape[1:]).contiguous()


def build_text2music(ctx: TaskContext, request: GenerationRequest, batch_size: int,
                     progress=None, cancel=None) -> Conditioning:
    """text2music, with the timbre of `reference_audio` when one is given."""
    frames, metas_s = text2music_frames(request.duration)
    silence = ctx.silence_latent
    if frames > silence.shape[1]:
        raise EngineError(f"duration: {frames / FRAMES_PER_S:.0f} s is longer than the silence latent "
                          f"({silence.shape[1] / FRAMES_PER_S:.0f} s) this checkpoint supports")
    caption, lyrics = request_prompts(request, metas_s)
    src = silence[:, :frames].expand(batch_size, -1, -1).contiguous()
    refer_packed, refer_order = silence_timbre(ctx, batch_size)
    cond = Conditioning(
        phases=[Phase(caption_prompts=[caption] * batch_size, lyric_prompts=[lyrics] * batch_size,
                      src_latents=src, chunk_masks=torch.ones_like(src),
                      is_covers=torch.zeros(batch_size, dtype=torch.bool, device=src.device))],
        refer_packed=refer_packed, refer_order_mask=refer_order, frames=frames, metas_duration_s=metas_s)
    if request.reference_audio is not None:
        if progress is not None:
            progress(ProgressEvent("encode_audio", 0, 1, "encoding reference audio"))
        reference = prepare_reference(request, ctx.encode_audio, silence).to(ctx.device, ctx.dtype)
        cond.refer_packed = _batch(reference, batch_size)
        cond.dump["refer_audio_latents"] = reference
    return cond


def build_source_task(ctx: TaskContext, request: GenerationRequest, batch_size: int,
                      progress=None, cancel=None) -> Conditioning:
    """repaint (incl. continuation/outpaint), cover (source or explicit codes), lego, extract, complete.

    Every batch item shares the source; items differ only by their noise.
    """
    emit = progress or (lambda event: None)
    task = request.task_type
    if task in BASE_ONLY_TASKS and ctx.is_turbo:
        raise EngineError(f"task '{task}' needs a base DiT (acestep-v15-base); the loaded DiT "
                          f"'{ctx.dit_name}' is a turbo model. Set \"dit\": \"acestep-v15-base\".")
    emit(ProgressEvent("encode_audio", 0, 2, "encoding source audio"))
    silence = ctx.silence_latent
    source = prepare_source(request, ctx.encode_source, ctx.decode_codes, silence,
                            enforce_region_limits=ctx.enforce_region_limits)
    if cancel is not None and cancel():
        raise Cancelled("cancelled")
    emit(ProgressEvent("encode_audio", 1, 2, "encoding reference audio" if request.reference_audio
                       else "no reference audio"))
    reference = prepare_reference(request, ctx.encode_audio, silence).to(ctx.device, ctx.dtype)
    emit(ProgressEvent("encode_audio", 2, 2, "audio encoded"))

    metas_s = source.source_seconds
    if metas_s is None and request.has_duration():
        metas_s = request.duration
    caption, lyrics = request_prompts(request, metas_s)
    target = _batch(source.target_latents, batch_size)
    main = Phase(caption_prompts=[caption] * batch_size, lyric_prompts=[lyrics] * batch_size,
                 src_latents=_batch(source.src_latents, batch_size),
                 chunk_masks=_batch(source.chunk_masks, batch_size),
                 is_covers=torch.full((batch_size,), source.is_cover, dtype=torch.bool, device=target.device))
    cond = Conditioning(phases=[main], refer_packed=_batch(reference, batch_size),
                        refer_order_mask=torch.arange(batch_size, dtype=torch.long, device=target.device),
                        frames=source.frames, metas_duration_s=metas_s)
    if request.reference_audio is not None:
        cond.dump["refer_audio_latents"] = reference

    if source.is_cover:
        _add_cover_phases(ctx, request, source, cond, batch_size)
    if source.repaint_mask is not None:
        ratio, crossfade_frames, wav_crossfade_s = repaint_schedule(request.repaint_mode, request.repaint_strength)
        mask = _batch(source.repaint_mask, batch_size)
        cond.repaint = RepaintSettings(mask=mask, clean=target, injection_ratio=ratio,
                                       crossfade_frames=crossfade_frames)
        cond.dump.update(repaint_mask=mask, target_latents=target)
        if request.repaint_mode != "aggressive":
            cond.splice = Splice(wave=source.wave, start_s=source.region.start_s, end_s=source.region.end_s,
                                 crossfade_s=wav_crossfade_s)
    return cond


def _add_cover_phases(ctx: TaskContext, request: GenerationRequest, source, cond: Conditioning,
                      batch_size: int) -> None:
    """Cover: 25 Hz hints from the source's FSQ codes (or the explicit codes), and the switch to
    text2music conditioning after int(steps * audio_cover_strength) steps when the strength is < 1."""
    main = cond.phases[0]
    if source.lm_hints is not None:
        hints = source.lm_hints
        cond.dump["audio_codes"] = torch.tensor(source.audio_codes, dtype=torch.int32)[None, :, None]
    else:
        hints, quantized, indices = ctx.tokenize_latents(source.src_latents)
        hints = hints[:, :source.frames]
        cond.dump.update(audio_codes=indices.to(torch.int32), lm_hints_5hz=quantized)
    main.lm_hints = _batch(hints, batch_size)
    if request.audio_cover_strength < 1.0:
        non_cover, _ = request_prompts(request, cond.metas_duration_s, instruction=TEXT2MUSIC_INSTRUCTION)
        silence_src = ctx.silence_latent[:, :cond.frames].expand(batch_size, -1, -1).to(ctx.dtype)
        cond.phases.append(Phase(caption_prompts=[non_cover] * batch_size, lyric_prompts=main.lyric_prompts,
                                 src_latents=silence_src, chunk_masks=main.chunk_masks,
                                 is_covers=torch.zeros_like(main.is_covers),
                                 from_fraction=request.audio_cover_strength))


# task_type -> builder(ctx, request, batch_size, progress, cancel) -> Conditioning
BUILDERS: dict[str, Callable[..., Conditioning]] = {
    "text2music": build_text2music,
    "repaint": build_source_task,
    "cover": build_source_task,
    "lego": build_source_task,
    "extract": build_source_task,
    "complete": build_source_task,
}


def build_conditioning(ctx: TaskContext, request: GenerationRequest, batch_size: int,
                       progress=None, cancel=None) -> Conditioning:
    if request.task_type == "text2music" and request.audio_codes:
        builder = BUILDERS["cover"]  # codes turn text2music into a cover (spec §5.3)
    else:
        builder = BUILDERS.get(request.task_type)
    if builder is None:
        raise EngineError(f"task {request.task_type} is not supported")
    return builder(ctx, request, batch_size, progress, cancel)
