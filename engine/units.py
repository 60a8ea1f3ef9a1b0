"""Units and rules shared by the engine, the bridge and the window. Torch-free.

Three clocks meet in this project, and identifiers say which one they count in:

* `_s`: seconds;
* `_samples`: audio sample frames (one per channel set) at a stated rate, 48 kHz in the engine;
* `_frames`: 25 Hz latent frames of the VAE (one per `HOP_SAMPLES` samples at 48 kHz).

ACE-Step 1.5's own conventions are kept exactly, float truncation included, because the parity
fixtures depend on them: a time `s` is latent frame `int(s * 48000 // 1920)`.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 48000            # the VAE's audio rate (stereo)
HOP_SAMPLES = 1920             # audio samples per latent frame (the VAE's total stride)
FRAMES_PER_S = SAMPLE_RATE // HOP_SAMPLES   # 25 latent frames per second
FRAMES_PER_CODE = 5            # one 5 Hz FSQ code covers 5 latent frames
CODES_PER_S = FRAMES_PER_S // FRAMES_PER_CODE
MIN_FRAMES = 128               # upstream raises every latent sequence to at least 128 frames (5.12 s)
MIN_DURATION_S = MIN_FRAMES / FRAMES_PER_S
MAX_DURATION_S = 600.0         # the longest audio (source or output) the engine takes
MIN_REGION_S = 3.0             # repaint / continuation region limits
MAX_REGION_S = 90.0
SOURCE_END = -1.0              # `repainting_end` value meaning "the end of the source"


def seconds_to_frame(seconds: float) -> int:
    """Latent frame index of a time (upstream's `int(s * 48000 // 1920)`)."""
    return int(seconds * SAMPLE_RATE // HOP_SAMPLES)


def seconds_to_samples(seconds: float, rate: int = SAMPLE_RATE) -> int:
    """Sample index of a time, truncated like upstream (`int(s * rate)`)."""
    return int(seconds * rate)


def frames_to_samples(frames: int) -> int:
    return frames * HOP_SAMPLES


def frames_to_seconds(frames: int) -> float:
    return frames / FRAMES_PER_S


def samples_to_frames(samples: int) -> int:
    """Latent frames a waveform of `samples` (at 48 kHz) encodes to (the VAE drops a partial hop)."""
    return samples // HOP_SAMPLES


def resolve_region_end_s(end_s: float | None, source_s: float) -> float:
    """What `repainting_end` means: None or any negative value is the end of the source."""
    return source_s if end_s is None or end_s < 0 else float(end_s)


@dataclass(frozen=True)
class RegionPlan:
    """Where a repaint region lies once the source has been padded for outpainting.

    All times are in the padded timeline (seconds); pads are in 48 kHz samples.
    """

    left_pad_samples: int
    right_pad_samples: int
    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


def plan_region(start_s: float, end_s: float | None, source_samples: int) -> RegionPlan:
    """Padding and shifted bounds for a region on a source of `source_samples` (48 kHz).

    A negative `start_s` extends the source to the left and an end after the source extends it to
    the right (continuation); both bounds then shift by the left padding. A negative or missing
    `end_s` means the end of the source.
    """
    source_s = source_samples / SAMPLE_RATE
    actual_end_s = resolve_region_end_s(end_s, source_s)
    left_s = max(0.0, -start_s)
    right_s = max(0.0, actual_end_s - source_s)
    return RegionPlan(
        left_pad_samples=int(left_s * SAMPLE_RATE),
        right_pad_samples=int(right_s * SAMPLE_RATE),
        start_s=start_s + left_s,
        end_s=actual_end_s + left_s,
    )


def region_length_problem(length_s: float) -> str | None:
    """Why a repaint/continuation region of this length is refused, or None when it is fine."""
    if length_s < MIN_REGION_S:
        return f"the region is {length_s:.2f} s long; it must be at least {MIN_REGION_S:.0f} s"
    if length_s > MAX_REGION_S:
        return (f"the region is {length_s:.2f} s long; it must be at most {MAX_REGION_S:.0f} s "
                f"(repaint longer spans in several passes)")
    return None
