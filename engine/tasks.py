"""Per-task DiT inputs: what each task feeds the sampler (spec §8).

`build_conditioning(pipeline, request)` returns a `Conditioning`: the prompt strings, source
latents, chunk masks, cover flags, packed timbre references, and the optional repaint / cover
switch inputs. The pipeline then does the parts every task shares (tokenise, encode, sample,
decode). text2music and the source-audio tasks (repaint/continuation, cover, lego, extract,
complete, reference timbre) are built here; the audio-side rules live in `engine.task_inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from engine.prompts import TEXT2MUSIC_INSTRUCTION, request_prompts
from engine.regions import splice_waveform
from engine.request import BASE_ONLY_TASKS, GenerationRequest
from engine.samplers import RepaintSettings, repaint_schedule
from engine.task_inputs import prepare_reference, prepare_source
from engine.types import Cancelled, EngineError, ProgressEvent

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


# ----------------------------------------------------------------------------- audio-conditioned tasks
def _encoder(pipeline: "Pipeline"):
    """waveform [2, S] -> VAE posterior-mean latents [T, 64] on the pipeline's device/dtype (tiled)."""
    def encode(wave: torch.Tensor) -> torch.Tensor:
        return pipeline.vae.encode(wave[None], tiled=True)[0].to(pipeline.device, pipeline.dtype)
    return encode


def _code_decoder(pipeline: "Pipeline"):
    """FSQ codes -> 25 Hz detokenizer hints [1, 5N, 64]."""
    def decode(codes: list[int]) -> torch.Tensor:
        indices = torch.tensor(codes, dtype=torch.long, device=pipeline.device)[None, :, None]
        quantized = pipeline.dit.tokenizer.quantizer.codes_to_output(indices)
        return pipeline.dit.detokenize(quantized.to(pipeline.dtype))
    return decode


def _batch(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    return tensor.expand(batch_size, *tensor.shape[1:]).contiguous()


def build_source_task(pipeline: "Pipeline", request: GenerationRequest, batch_size: int,
                      progress=None, cancel=None) -> Conditioning:
    """repaint (incl. continuation/outpaint), cover (source or explicit codes), lego, extract, complete.

    Every batch item shares the source; items differ only by their noise.
    """
    emit = progress or (lambda event: None)
    task = request.task_type
    if task in BASE_ONLY_TASKS and pipeline.is_turbo:
        raise EngineError(f"task '{task}' needs a base DiT (acestep-v15-base); the loaded DiT "
                          f"'{pipeline.dit_name}' is a turbo model. Set \"dit\": \"acestep-v15-base\".")
    emit(ProgressEvent("encode_audio", 0, 2, "encoding source audio"))
    silence = pipeline.silence_latent
    source = prepare_source(request, _encoder(pipeline), _code_decoder(pipeline), silence,
                            enforce_region_limits=pipeline.enforce_region_limits)
    if cancel is not None and cancel():
        raise Cancelled("cancelled")
    emit(ProgressEvent("encode_audio", 1, 2, "encoding reference audio" if request.reference_audio
                       else "no reference audio"))
    reference = prepare_reference(request, _encoder(pipeline), silence).to(pipeline.device, pipeline.dtype)
    emit(ProgressEvent("encode_audio", 2, 2, "audio encoded"))

    frames = source.frames
    metas_s = source.source_seconds
    if metas_s is None and request.has_duration():
        metas_s = request.duration
    caption, lyrics = request_prompts(request, metas_s)
    target = _batch(source.target_latents, batch_size)
    cond = Conditioning(
        caption_prompts=[caption] * batch_size,
        lyric_prompts=[lyrics] * batch_size,
        src_latents=_batch(source.src_latents, batch_size),
        chunk_masks=_batch(source.chunk_masks, batch_size),
        is_covers=torch.full((batch_size,), source.is_cover, dtype=torch.bool, device=target.device),
        refer_packed=_batch(reference, batch_size),
        refer_order_mask=torch.arange(batch_size, dtype=torch.long, device=target.device),
        frames=frames,
        metas_duration_s=metas_s,
    )
    if request.reference_audio is not None:
        cond.dump["refer_audio_latents"] = reference

    if source.is_cover:
        _add_cover_hints(pipeline, request, source, cond, batch_size)
    if source.repaint_mask is not None:
        ratio, crossfade_frames, wav_crossfade_s = repaint_schedule(request.repaint_mode, request.repaint_strength)
        mask = _batch(source.repaint_mask, batch_size)
        cond.repaint = RepaintSettings(mask=mask, clean=target, injection_ratio=ratio,
                                       crossfade_frames=crossfade_frames)
        cond.dump.update(repaint_mask=mask, target_latents=target)
        if request.repaint_mode != "aggressive":
            region, wave = source.region, source.wave.to(target.device)
            cond.wave_postprocess = lambda decoded: splice_waveform(decoded, wave, region.start_s, region.end_s,
                                                                    wav_crossfade_s)
    return cond


def _add_cover_hints(pipeline: "Pipeline", request: GenerationRequest, source, cond: Conditioning,
                     batch_size: int) -> None:
    """Cover: 25 Hz hints from the source's FSQ codes (or the explicit codes), and the switch to
    text2music conditioning after int(steps * audio_cover_strength) steps when the strength is < 1."""
    if source.lm_hints is not None:
        hints = source.lm_hints
        cond.dump["audio_codes"] = torch.tensor(source.audio_codes, dtype=torch.int32)[None, :, None]
    else:
        quantized, indices = pipeline.dit.tokenize(source.src_latents)
        hints = pipeline.dit.detokenize(quantized)[:, :source.frames]
        cond.dump.update(audio_codes=indices.to(torch.int32), lm_hints_5hz=quantized)
    cond.lm_hints = _batch(hints, batch_size)
    cond.cover_strength = request.audio_cover_strength
    if request.audio_cover_strength < 1.0:
        non_cover, _ = request_prompts(request, cond.metas_duration_s, instruction=TEXT2MUSIC_INSTRUCTION)
        cond.non_cover_caption_prompts = [non_cover] * batch_size


def build_text2music_task(pipeline: "Pipeline", request: GenerationRequest, batch_size: int,
                          progress=None, cancel=None) -> Conditioning:
    """text2music, with the timbre of `reference_audio` when one is given."""
    cond = build_text2music(pipeline, request, batch_size)
    if request.reference_audio is not None:
        if progress is not None:
            progress(ProgressEvent("encode_audio", 0, 1, "encoding reference audio"))
        reference = prepare_reference(request, _encoder(pipeline), pipeline.silence_latent)
        reference = reference.to(pipeline.device, pipeline.dtype)
        cond.refer_packed = _batch(reference, batch_size)
        cond.dump["refer_audio_latents"] = reference
    return cond


# task_type -> builder(pipeline, request, batch_size, progress, cancel) -> Conditioning
BUILDERS: dict[str, Callable[..., Conditioning]] = {
    "text2music": build_text2music_task,
    "repaint": build_source_task,
    "cover": build_source_task,
    "lego": build_source_task,
    "extract": build_source_task,
    "complete": build_source_task,
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
