"""Audio in and out of the bridge: context audio for the engine, result -> bar-exact host clip.

Time bookkeeping: every audio array here is [channels, samples] float32, and "window" audio
starts at a known project time. Results are resampled to the host rate *before* cutting, so
the cut is exact in host samples: the clip for region [a, b) starts at project sample
round(a * host_sr) and has round(b * host_sr) - round(a * host_sr) samples.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from bridge.grid import Region, TempoMap, seconds_to_samples, span_samples
from bridge.wavchunks import AcidInfo, BextInfo, key_to_midi_note, write_wav
from engine.units import SAMPLE_RATE

ENGINE_SAMPLE_RATE = SAMPLE_RATE  # context audio is sent at the engine's rate


class ClipError(ValueError):
    """Audio that cannot be used: unreadable, truncated, empty, or the wrong shape."""


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read any audio file soundfile knows as float32 [channels, samples] (mono is doubled to stereo)."""
    try:
        data, sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ClipError(f"cannot read audio file {path}: {exc}") from None
    except FileNotFoundError:
        raise ClipError(f"audio file not found: {path}") from None
    if data.shape[0] == 0:
        raise ClipError(f"audio file {path} has no samples (a half-finished render?)")
    audio = data.T
    if audio.shape[0] == 1:
        audio = np.concatenate([audio, audio])
    return np.ascontiguousarray(audio[:2]), int(sr)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def take(audio: np.ndarray, offset: int, length_samples: int) -> np.ndarray:
    """`length_samples` samples from `offset`, zero-filled where the audio does not reach."""
    out = np.zeros((audio.shape[0], length_samples), dtype=np.float32)
    lo, hi = max(offset, 0), min(offset + length_samples, audio.shape[1])
    if hi > lo:
        out[:, lo - offset:hi - offset] = audio[:, lo:hi]
    return out


def apply_edge_fades(audio: np.ndarray, sample_rate: int, fade_ms: float) -> np.ndarray:
    """Short equal-power fade-in and fade-out, so the clip meets its neighbours without clicks."""
    n = min(int(round(sample_rate * fade_ms / 1000.0)), audio.shape[1] // 2)
    if n <= 0:
        return audio
    out = audio.copy()
    ramp = np.sin(np.linspace(0.0, np.pi / 2, n, dtype=np.float32)) ** 2
    out[:, :n] *= ramp
    out[:, -n:] *= ramp[::-1]
    return out


def source_excerpt(path: str | os.PathLike, start_s: float, end_s: float, out_sr: int = ENGINE_SAMPLE_RATE,
                   file_offset_s: float = 0.0) -> np.ndarray:
    """Project time [start_s, end_s) from a file whose first sample is project time `file_offset_s`,
    resampled to `out_sr`; silence where the file does not reach. Reads only that part of the file."""
    try:
        with sf.SoundFile(os.fspath(path)) as fh:
            sr, total_samples = fh.samplerate, fh.frames
            a = seconds_to_samples(start_s - file_offset_s, sr)
            length_samples = span_samples(start_s, end_s, sr)
            lo, hi = max(a, 0), min(a + length_samples, total_samples)
            part = np.zeros((0, fh.channels), dtype=np.float32)
            if hi > lo:
                fh.seek(lo)
                part = fh.read(hi - lo, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ClipError(f"cannot read audio file {path}: {exc}") from None
    except FileNotFoundError:
        raise ClipError(f"audio file not found: {path}") from None
    # Kept as [samples, channels] (the layout soundfile reads and soxr takes) until the end, and the
    # file's part dropped early: a long window is never held in more than about three copies.
    frames = np.zeros((length_samples, 2), dtype=np.float32)
    if hi > lo:
        frames[lo - a:hi - a] = part[:, :2]  # mono fills both channels; a third and more are dropped
    del part
    if sr != out_sr:
        frames = soxr.resample(frames, sr, out_sr, quality="HQ")
    out_samples = span_samples(start_s, end_s, out_sr)
    out = np.zeros((2, out_samples), dtype=np.float32)
    kept = min(out_samples, frames.shape[0])
    out[:, :kept] = frames[:kept].T
    return out


def write_context(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = ENGINE_SAMPLE_RATE) -> str:
    """Context audio for upload (24-bit WAV, no metadata: a quarter smaller than float, same detail
    for the model)."""
    return write_wav(path, audio, sample_rate, sample_format="pcm24")


def cut_result(audio: np.ndarray, result_sr: int, window_start_s: float, region: Region, host_sr: int,
               fade_ms: float = 10.0) -> np.ndarray:
    """The part of a result (which starts at project time `window_start_s`) covering `region`,
    at `host_sr`, exactly `region.samples(host_sr)` samples, with edge fades."""
    host = resample(audio, result_sr, host_sr)
    offset = seconds_to_samples(region.start_s, host_sr) - seconds_to_samples(window_start_s, host_sr)
    clip = take(host, offset, region.samples(host_sr))
    return apply_edge_fades(clip, host_sr, fade_ms)


@dataclass
class ClipMeta:
    region: Region
    tempo_map: TempoMap
    sample_rate: int
    key: str | None = None
    task: str = ""
    seed: int | None = None
    project: str = ""


def write_clip(path: str | os.PathLike, audio: np.ndarray, meta: ClipMeta, sample_format: str = "pcm24") -> str:
    """Write a host clip with an `acid` chunk (tempo, beats, meter, root note) and a `bext`
    time reference (the region start in samples at the clip's rate)."""
    tm = meta.tempo_map
    point = tm.point_at_seconds(meta.region.start_s)
    start_bar, end_bar = tm.seconds_to_bar(meta.region.start_s), tm.seconds_to_bar(meta.region.end_s)
    beats = int(round((end_bar - start_bar) * point.num))  # beats of the meter, as ACID counts them
    now = _dt.datetime.now()
    description = f"{meta.project} {meta.task} bar {int(round(start_bar)) + 1} seed {meta.seed}".strip()
    return write_wav(
        path, audio, meta.sample_rate, sample_format=sample_format,
        acid=AcidInfo(tempo=point.bpm, num_beats=beats, meter_num=point.num, meter_den=point.den,
                      root_note=key_to_midi_note(meta.key)),
        bext=BextInfo(time_reference=seconds_to_samples(meta.region.start_s, meta.sample_rate),
                      description=description, originator_reference=f"ace-companion/{meta.task}",
                      origination_date=now.strftime("%Y-%m-%d"), origination_time=now.strftime("%H-%M-%S")),
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, fallback: str = "untitled") -> str:
    """A file-name-safe version of a project or task name."""
    cleaned = _UNSAFE.sub("_", (text or "").strip()).strip("._")
    return cleaned[:60] or fallback


def clip_path(output_dir: str | os.PathLike, project: str, task: str, bar: int, seed: int | None) -> str:
    """`<output>/<project>/<project>-<task>-<bar>-<seed>.wav`, with -2, -3... if that name is taken.
    The file is created (empty) to reserve the name."""
    project = safe_name(project)
    folder = os.path.join(os.fspath(output_dir), project)
    os.makedirs(folder, exist_ok=True)
    stem = f"{project}-{safe_name(task, 'clip')}-{bar}-{seed if seed is not None else 'x'}"
    n = 1
    while True:
        path = os.path.join(folder, f"{stem}.wav" if n == 1 else f"{stem}-{n}.wav")
        try:  # reserve the name atomically: two jobs finishing together must not pick the same file
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return path
        except FileExistsError:
            n += 1


def is_within(path: str | os.PathLike, roots: list[str | os.PathLike]) -> bool:
    """True when `path` (after resolving links and '..') lies inside one of `roots`."""
    real = os.path.realpath(os.fspath(path))
    for root in roots:
        base = os.path.realpath(os.fspath(root))
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False
