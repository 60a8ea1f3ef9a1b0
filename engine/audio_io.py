"""Reading and writing audio for the engine.

Everything the models see is stereo float32 at 48 kHz, shaped [2, samples], in [-1, 1].
`load_audio` turns any file libsndfile reads (WAV, FLAC, AIFF, OGG/Vorbis, ...) into that:

* mono is duplicated to both channels;
* more than two channels: only the first two are kept (upstream ACE-Step does the same;
  no down-mix, so a 5.1 file keeps front left / front right);
* any other sample rate is resampled with soxr ("VHQ" quality);
* samples are clamped to [-1, 1].

Unreadable, empty, all-silent, non-finite and over-long files raise `EngineError` naming the file.
So do files whose decoded size (frames x channels) would pass `MAX_DECODED_VALUES`: a few hundred
KB of FLAC can hold 8 channels at 96 kHz, gigabytes once decoded, so the size is checked from the
header before any sample is read, and only the two kept channels are held while reading.
"""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf
import soxr
import torch

from engine.types import EngineError
from engine.units import MAX_DURATION_S, SAMPLE_RATE

MAX_SECONDS = MAX_DURATION_S
# A file whose peak stays below this is treated as digital silence (24-bit LSB is ~1.2e-7).
SILENCE_PEAK = 1e-6

# The most float32 values a file may decode to: 600 s of stereo at 48 kHz (about 230 MB).
MAX_DECODED_VALUES = int(MAX_SECONDS * SAMPLE_RATE * 2)
MAX_SOURCE_RATE = 384000
READ_BLOCK_FRAMES = 1 << 18

REFERENCE_SECONDS = 30
REFERENCE_WINDOW_SECONDS = 10


def load_audio(path: str | os.PathLike, max_seconds: float = MAX_SECONDS, what: str = "audio file",
               allow_silent: bool = False) -> torch.Tensor:
    """Read `path` as float32 stereo at 48 kHz, shape [2, samples]."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise EngineError(f"{what} '{name}' does not exist")
    if os.path.isdir(name):
        raise EngineError(f"{what} '{name}' is a folder, not an audio file")
    try:
        info = sf.info(name)
    except Exception as exc:  # libsndfile reports corrupt and unknown formats alike
        raise EngineError(f"{what} '{name}' is not a readable audio file ({_short(exc)})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise EngineError(f"{what} '{name}' is empty (no samples)")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise EngineError(f"{what} '{name}' is {seconds / 60:.1f} minutes long; "
                          f"the limit is {max_seconds / 60:.0f} minutes")
    problem = decode_problem(info.frames, info.channels, info.samplerate)
    if problem:
        raise EngineError(f"{what} '{name}' {problem}")
    try:
        data, rate = _read_first_two_channels(name, info.frames)  # [samples, channels]
    except Exception as exc:
        raise EngineError(f"{what} '{name}' could not be decoded ({_short(exc)})") from None
    if data.shape[0] == 0:
        raise EngineError(f"{what} '{name}' is empty (no samples)")
    if not np.isfinite(data).all():
        raise EngineError(f"{what} '{name}' contains NaN or infinite samples")
    wave = to_stereo_48k(data, rate)
    if not allow_silent and float(np.abs(wave).max()) < SILENCE_PEAK:
        raise EngineError(f"{what} '{name}' is silent (every sample is zero)")
    return torch.from_numpy(np.ascontiguousarray(wave))


def decode_problem(frames: int, channels: int, sample_rate: int) -> str | None:
    """Why a file of this shape is not decoded (it would cost too much memory), or None."""
    if not 0 < sample_rate <= MAX_SOURCE_RATE:
        return f"has a sample rate of {sample_rate} Hz; the limit is {MAX_SOURCE_RATE} Hz"
    if channels > 64:
        return f"has {channels} channels; the limit is 64"
    values = frames * channels
    if values > MAX_DECODED_VALUES:
        return (f"would decode to {channels} channels x {frames / sample_rate:.0f} s at {sample_rate} Hz = "
                f"{values / 1e6:.0f} million samples, over the limit of {MAX_DECODED_VALUES / 1e6:.0f} million "
                f"({MAX_SECONDS:.0f} s of stereo at 48 kHz); export a shorter stereo mix")
    return None


def _read_first_two_channels(name: str, frames: int) -> tuple[np.ndarray, int]:
    """Decode block by block, keeping at most two channels and at most `frames` frames."""
    with sf.SoundFile(name) as fh:
        kept = min(fh.channels, 2)
        out = np.empty((frames, kept), dtype=np.float32)
        filled = 0
        while filled < frames:
            block = fh.read(min(READ_BLOCK_FRAMES, frames - filled), dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            out[filled:filled + block.shape[0]] = block[:, :kept]
            filled += block.shape[0]
        return out[:filled], fh.samplerate


def to_stereo_48k(data: np.ndarray, rate: int) -> np.ndarray:
    """[samples, channels] float32 at `rate` -> [2, samples] float32 at 48 kHz, clamped."""
    if data.ndim == 1:
        data = data[:, None]
    if data.shape[1] == 1:
        data = np.repeat(data, 2, axis=1)
    data = np.ascontiguousarray(data[:, :2], dtype=np.float32)
    if rate != SAMPLE_RATE:
        data = soxr.resample(data, rate, SAMPLE_RATE, quality="VHQ").astype(np.float32, copy=False)
    return np.clip(data.T, -1.0, 1.0).astype(np.float32)


def write_audio(path: str | os.PathLike, wave, sr: int = SAMPLE_RATE, fmt: str | None = None) -> str:
    """Write [channels, samples] (tensor or array) to `path`.

    `fmt` is "wav" (32-bit float, lossless for our output) or "flac" (24-bit);
    None takes it from the file extension. Returns the path written.
    """
    name = os.fspath(path)
    if fmt is None:
        fmt = os.path.splitext(name)[1].lstrip(".").lower() or "wav"
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().to("cpu", torch.float32).numpy()
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        wave = wave[None, :]
    if wave.ndim != 2:
        raise EngineError(f"cannot write audio of shape {tuple(wave.shape)}; expected [channels, samples]")
    if fmt == "wav":
        sf.write(name, wave.T, sr, format="WAV", subtype="FLOAT")
    elif fmt == "flac":
        sf.write(name, np.clip(wave.T, -1.0, 1.0), sr, format="FLAC", subtype="PCM_24")
    else:
        raise EngineError(f"unsupported audio format '{fmt}' (use wav or flac)")
    return name


def reference_montage(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The 30 s timbre reference built from `wave` [2, N] (spec §8.5).

    The audio is repeated until it lasts at least 30 s and cut into thirds of length
    `N // 3`; a 10 s window is taken from each third and the three are concatenated.
    Upstream draws each window's offset at random; we always take the window at the
    START of each third, so a seed reproduces the same result (the parity fixtures do the same).
    """
    target = REFERENCE_SECONDS * sample_rate
    window = REFERENCE_WINDOW_SECONDS * sample_rate
    if wave.shape[-1] == 0:
        raise EngineError("reference audio is empty")
    if wave.shape[-1] < target:
        wave = wave.repeat(1, math.ceil(target / wave.shape[-1]))
    third = wave.shape[-1] // 3
    parts = [wave[:, k * third:k * third + window] for k in range(3)]
    return torch.cat(parts, dim=-1)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__

