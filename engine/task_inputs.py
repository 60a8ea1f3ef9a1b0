"""Audio-side inputs of the audio-conditioned tasks (repaint, continuation, cover, lego, extract,
complete, reference timbre), built from a request.

This module decides *what* the DiT sees; it does not run any network itself. The caller passes
small callables for the VAE encode and the code decoder, so the logic is testable without models.

Summary of the rules (upstream ACE-Step 1.5, spec §8):

* the source is loaded as 48 kHz stereo; repaint/lego regions that reach outside it pad it with
  zeros (`engine.regions.plan_region`); the padded waveform is VAE-encoded (posterior mean) to
  `T0 = samples // 1920` frames and, if shorter than 128 frames, extended with the *first* frames
  of the silence latent;
* repaint: frames inside the region are replaced in `src_latents` by the silence-latent frames of
  the same indices; lego keeps the source there; chunk mask 1 inside the region ("explicit") or
  everywhere ("auto": upstream's default writes 2.0 into a bool mask, which becomes all ones);
* cover: `is_cover` True, the DiT context gets FSQ hints of the source (done by the model);
  explicit `audio_codes` replace the source: they are detokenised to 25 Hz hints (5 frames per
  code, padded with silence to >= 128 frames) which serve as both source latents and hints;
* extract / complete: source latents as they are, full chunk mask;
* the prompt's duration is the unpadded source length.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.audio_io import load_audio, reference_montage
from engine.regions import check_region_length, frame_range, pad_source
from engine.request import TRACK_NAMES, GenerationRequest, RequestError
from engine.units import HOP_SAMPLES, MIN_FRAMES, SAMPLE_RATE, RegionPlan, plan_region

REFERENCE_FRAMES = 750    # 30 s timbre reference at 25 Hz
MAX_AUDIO_CODE = 63999

_CODE_TOKEN = re.compile(r"<\|audio_code_(\d+)\|>")

# latents [T, 64] from a waveform [2, S]
EncodeFn = Callable[[torch.Tensor], torch.Tensor]
# hints [1, 5N, 64] from codes [N]
DecodeCodesFn = Callable[[list[int]], torch.Tensor]


@dataclass
class SourceInputs:
    """Everything a source task adds to the DiT input (batch dimension 1)."""

    task_type: str
    frames: int                           # T
    target_latents: torch.Tensor          # [1, T, 64] clean source latents ("target_latents" in dumps)
    src_latents: torch.Tensor             # [1, T, 64] context source (before cover hints)
    chunk_masks: torch.Tensor             # [1, T, 64] float 0/1
    is_cover: bool
    source_seconds: float | None          # unpadded source length (the prompt's duration); None with codes
    wave: torch.Tensor | None = None      # [2, S] padded source waveform (for the splice); None with codes
    region: RegionPlan | None = None      # repaint/lego region in the padded timeline
    region_frames: tuple[int, int] | None = None
    repaint_mask: torch.Tensor | None = None   # [1, T] bool, True = generate
    lm_hints: torch.Tensor | None = None  # [1, T, 64] hints decoded from explicit audio codes
    audio_codes: list[int] | None = None  # explicit codes, as parsed


def parse_audio_codes(codes: str | list[int]) -> list[int]:
    """`<|audio_code_N|>` tokens (or a list of ints, or plain comma/space separated ints) -> ints.

    Values outside 0..63999 are clamped, as upstream does.
    """
    if isinstance(codes, (list, tuple)):
        values = [int(c) for c in codes]
    else:
        text = str(codes)
        found = _CODE_TOKEN.findall(text)
        if found:
            values = [int(v) for v in found]
        elif re.fullmatch(r"[\s,]*\d+([\s,]+\d+)*[\s,]*", text):
            values = [int(v) for v in re.findall(r"\d+", text)]
        else:
            raise RequestError("audio_codes", "no '<|audio_code_N|>' tokens found")
    if not values:
        raise RequestError("audio_codes", "the code list is empty")
    return [max(0, min(v, MAX_AUDIO_CODE)) for v in values]


def check_track_names(request: GenerationRequest) -> None:
    """Engine-side check of track_name / track_classes with a message listing the valid names."""
    names = ([request.track_name] if request.track_name is not None else []) + list(request.track_classes or [])
    field = "track_name" if request.track_name is not None and request.track_name not in TRACK_NAMES \
        else "track_classes"
    for name in names:
        if name not in TRACK_NAMES:
            raise RequestError(field, f"unknown track '{name}'; valid tracks are: {', '.join(TRACK_NAMES)}")


def silence_frames(silence_latent: torch.Tensor, length: int, start: int = 0) -> torch.Tensor:
    """Frames [start, start + length) of the silence latent [1, F, 64] (tiled if F is too short) -> [length, 64]."""
    silence = silence_latent[0]
    needed = start + length
    if needed > silence.shape[0]:
        silence = silence.repeat((needed + silence.shape[0] - 1) // silence.shape[0], 1)
    return silence[start:needed]


def prepare_source(request: GenerationRequest, encode: EncodeFn, decode_codes: DecodeCodesFn,
                   silence_latent: torch.Tensor, enforce_region_limits: bool = True) -> SourceInputs:
    """Load, pad and encode the source of a task request (see the module docstring).

    `enforce_region_limits=False` skips only the 3..90 s repaint-length rule (parity fixtures use
    a 2.3 s region); every other check stays.
    """
    task = request.task_type
    check_track_names(request)
    if request.audio_codes:
        if task not in ("cover", "text2music"):
            raise RequestError("audio_codes", f"audio codes only apply to cover (or text2music), not to '{task}'")
        codes = parse_audio_codes(request.audio_codes)
        hints = decode_codes(codes)
        if hints.dim() == 2:
            hints = hints[None]
        frames = max(MIN_FRAMES, hints.shape[1])
        hints = _pad_with_silence(hints[0], frames, silence_latent)[None]
        mask = torch.ones(1, frames, hints.shape[-1], dtype=hints.dtype, device=hints.device)
        return SourceInputs(task_type="cover", frames=frames, target_latents=hints.clone(),
                            src_latents=hints.clone(), chunk_masks=mask, is_cover=True,
                            source_seconds=None, lm_hints=hints, audio_codes=codes)
    if request.src_audio is None:
        raise RequestError("src_audio", f"task '{task}' needs a source audio file")

    # lego builds on its source: silence is a valid canvas (an empty project), as upstream accepts it
    wave = load_audio(request.src_audio, what="source audio", allow_silent=(task == "lego"))
    source_samples = wave.shape[-1]
    source_seconds = source_samples / SAMPLE_RATE
    region = None
    if task in ("repaint", "lego"):
        region = plan_region(request.repainting_start, request.repainting_end, source_samples)
        check_region_length(region, source_seconds, enforce_limits=task == "repaint" and enforce_region_limits)
        wave = pad_source(wave, region)
    if wave.shape[-1] < HOP_SAMPLES:
        raise RequestError("src_audio", f"the source is {wave.shape[-1]} samples long; "
                                        f"at least {HOP_SAMPLES} are needed")

    latents = encode(wave)
    if latents.dim() == 3:
        latents = latents[0]
    frames = max(MIN_FRAMES, latents.shape[0])
    target = _pad_with_silence(latents, frames, silence_latent)[None]
    src = target.clone()
    chunk = torch.ones(1, frames, target.shape[-1], dtype=target.dtype, device=target.device)
    inputs = SourceInputs(task_type=task, frames=frames, target_latents=target, src_latents=src,
                          chunk_masks=chunk, is_cover=(task == "cover"), source_seconds=source_seconds,
                          wave=wave, region=region)
    if region is not None:
        start_f, end_f = frame_range(region.start_s, region.end_s, frames)
        inputs.region_frames = (start_f, end_f)
        if request.chunk_mask_mode == "explicit":
            chunk.zero_()
            chunk[:, start_f:end_f] = 1.0
        if task == "repaint":
            src[0, start_f:end_f] = silence_frames(silence_latent, end_f - start_f, start_f).to(src)
        repaint_mask = torch.zeros(1, frames, dtype=torch.bool, device=target.device)
        repaint_mask[:, start_f:end_f] = True
        inputs.repaint_mask = repaint_mask
    return inputs


def prepare_reference(request: GenerationRequest, encode: EncodeFn, silence_latent: torch.Tensor) -> torch.Tensor:
    """Timbre input [1, 750, 64]: the encoded 30 s montage of `reference_audio`, else silence."""
    if request.reference_audio is None:
        return silence_latent[:, :REFERENCE_FRAMES].clone()
    wave = load_audio(request.reference_audio, what="reference audio")
    latents = encode(reference_montage(wave))
    if latents.dim() == 3:
        latents = latents[0]
    return latents[None, :REFERENCE_FRAMES]


def _pad_with_silence(latents: torch.Tensor, frames: int, silence_latent: torch.Tensor) -> torch.Tensor:
    """[T0, 64] -> [frames, 64]: cut, or extend with the first frames of the silence latent."""
    if latents.shape[0] >= frames:
        return latents[:frames]
    pad = silence_frames(silence_latent, frames - latents.shape[0]).to(latents)
    return torch.cat([latents, pad], dim=0)
