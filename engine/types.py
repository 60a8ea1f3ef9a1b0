"""Plain data shared by the pipeline, the service and its clients (no torch here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Stages a job goes through, in order. The pipeline reports progress with these names.
STAGES = (
    "load",          # loading or switching models
    "lm_cot",        # LM phase 1: chain of thought (metas, caption)
    "lm_codes",      # LM phase 2: 5 Hz audio codes
    "encode_text",   # text encoder + lyric embedding
    "encode_audio",  # VAE encode of source / reference audio
    "diffusion",     # DiT sampler steps
    "decode",        # VAE decode
    "postprocess",   # splice, normalisation
)


class EngineError(Exception):
    """A failure that belongs to one job; the message is meant for the musician."""


class CheckpointError(EngineError):
    """A checkpoint folder or file is missing, truncated or does not match the model."""


class Cancelled(EngineError):
    """The job was cancelled (raised from inside the pipeline between steps)."""


@dataclass
class ProgressEvent:
    stage: str
    step: int = 0
    total: int = 0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "step": self.step, "total": self.total, "message": self.message}


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]


@dataclass
class GenerationOutput:
    """What `Pipeline.generate` returns.

    `audio` holds one float32 array of shape [2, samples] per batch item, at `sample_rate`.
    `dump` holds intermediate tensors under the parity-case names when asked for.
    """

    audio: list[Any]
    sample_rate: int
    seeds: list[int]
    request: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    lm_plan: dict[str, Any] | None = None
    dump: dict[str, Any] | None = None
    models: dict[str, str] = field(default_factory=dict)
    # What the run cost (see `engine.pipeline.Work`): encoded/decoded frames, DiT tokens and steps,
    # the decoder's receptive field and the cache outcomes. None from pipelines that do not count.
    work: dict[str, Any] | None = None
    # The whole take (48 kHz) when `audio` is only part of it (`output_region` / `output_sample_rate`);
    # the service keeps it as a file so the next chunk can name it as its source.
    full_audio: list[Any] | None = None
