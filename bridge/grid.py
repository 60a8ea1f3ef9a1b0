"""Musical grid maths: quarter notes <-> seconds <-> samples, bars, regions and context windows.

Everything here is pure (no I/O, no threads). Positions in beats are quarter notes (QN), the
unit both REAPER (`TimeMap2_timeToQN`) and Ableton (`current_song_time`, `loop_start`) use.
A bar lasts `numerator * 4 / denominator` quarter notes.

Tempo maps hold step changes of tempo and meter. REAPER's linear tempo ramps are treated as a
step at the marker (good to well under a millisecond for the short ramps people use; a long
ramp will drift). Meter changes are expected on bar lines, as REAPER enforces.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from engine.units import MAX_DURATION_S

# The engine accepts at most MAX_DURATION_S of audio; the bridge keeps the model input well
# below that by default because cost grows with the window.
DEFAULT_MAX_CONTEXT_S = 240.0
MIN_CONTEXT_S = 10.0  # ACE-Step's audio_duration floor
FULL_MASK_RATIO = 0.95  # a region this full of its window gets padding (a full mask is out of distribution)
FULL_MASK_PAD_S = 1.0


class GridError(ValueError):
    """A region, tempo or meter that cannot be used; the message says which and why."""


# ------------------------------------------------------------------ checks
def _finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise GridError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise GridError(f"{name} must be a finite number, got {value!r}")
    return value


def check_tempo(bpm: float) -> float:
    bpm = _finite("tempo", bpm)
    if not 1.0 <= bpm <= 999.0:
        raise GridError(f"tempo {bpm} BPM is outside 1-999")
    return bpm


def check_meter(numerator: int, denominator: int) -> tuple[int, int]:
    try:
        num, den = int(numerator), int(denominator)
    except (TypeError, ValueError):
        raise GridError(f"meter must be two integers, got {numerator!r}/{denominator!r}") from None
    if num != numerator or den != denominator:
        raise GridError(f"meter must be two integers, got {numerator!r}/{denominator!r}")
    if not 1 <= num <= 64:
        raise GridError(f"meter numerator {num} is outside 1-64")
    if den not in (1, 2, 4, 8, 16, 32, 64):
        raise GridError(f"meter denominator {den} is not a power of two up to 64")
    return num, den


def check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or not 8000 <= sample_rate <= 384000:
        raise GridError(f"sample rate {sample_rate!r} is not an integer in 8000-384000 Hz")
    return int(sample_rate)


# ------------------------------------------------------------------ plain conversions
def bar_length_qn(numerator: int, denominator: int) -> float:
    """Quarter notes in one bar: 3/4 -> 3, 6/8 -> 3, 7/8 -> 3.5, 4/4 -> 4."""
    num, den = check_meter(numerator, denominator)
    return num * 4.0 / den


def qn_seconds(bpm: float) -> float:
    """Seconds per quarter note at `bpm` (BPM counts quarter notes, as both DAWs do)."""
    return 60.0 / check_tempo(bpm)


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
    """Nearest sample index of a time."""
    return int(round(_finite("time", seconds) * check_sample_rate(sample_rate)))


def samples_to_seconds(samples: int, sample_rate: int) -> float:
    return samples / check_sample_rate(sample_rate)


def span_samples(start_s: float, end_s: float, sample_rate: int) -> int:
    """Samples between two times, rounded at each end so consecutive spans tile exactly."""
    return seconds_to_samples(end_s, sample_rate) - seconds_to_samples(start_s, sample_rate)


def bars_to_samples(bars: float, bpm: float, numerator: int, denominator: int, sample_rate: int) -> int:
    """Bar-exact length at a constant tempo: round(bars * QN per bar * 60/bpm * sr)."""
    return int(round(bars * bar_length_qn(numerator, denominator) * qn_seconds(bpm) * check_sample_rate(sample_rate)))


# ------------------------------------------------------------------ tempo maps
@dataclass(frozen=True)
class TempoPoint:
    """From quarter note `qn` on, the tempo is `bpm` and the meter `num`/`den`."""

    qn: float
    bpm: float
    num: int = 4
    den: int = 4


class TempoMap:
    """Step changes of tempo and meter, with conversions between QN, seconds and bars.

    Positions before the first point use the first point's tempo and meter.
    """

    def __init__(self, points: list[TempoPoint] | tuple[TempoPoint, ...]):
        if not points:
            raise GridError("a tempo map needs at least one tempo")
        cleaned = []
        for p in sorted(points, key=lambda p: p.qn):
            num, den = check_meter(p.num, p.den)
            cleaned.append(TempoPoint(_finite("tempo map position", p.qn), check_tempo(p.bpm), num, den))
        # Collapse points at the same position: the later one wins.
        unique: list[TempoPoint] = []
        for p in cleaned:
            if unique and abs(unique[-1].qn - p.qn) < 1e-9:
                unique[-1] = p
            else:
                unique.append(p)
        first = unique[0]
        if first.qn != 0.0:
            unique[0] = TempoPoint(0.0, first.bpm, first.num, first.den) if first.qn < 0 else first
            if first.qn > 0:
                unique.insert(0, TempoPoint(0.0, first.bpm, first.num, first.den))
        self.points: tuple[TempoPoint, ...] = tuple(unique)
        self._qn = [p.qn for p in self.points]
        self._sec = [0.0]
        self._bar = [0.0]
        for prev, cur in zip(self.points, self.points[1:]):
            d_qn = cur.qn - prev.qn
            self._sec.append(self._sec[-1] + d_qn * 60.0 / prev.bpm)
            self._bar.append(self._bar[-1] + d_qn / bar_length_qn(prev.num, prev.den))

    # -- construction
    @classmethod
    def constant(cls, bpm: float, numerator: int = 4, denominator: int = 4) -> TempoMap:
        return cls([TempoPoint(0.0, bpm, numerator, denominator)])

    @classmethod
    def from_seconds(cls, markers: list[tuple[float, float, int, int]]) -> TempoMap:
        """Build from (time_s, bpm, num, den) markers, as REAPER's `GetTempoTimeSigMarker` gives them."""
        if not markers:
            raise GridError("a tempo map needs at least one tempo")
        ordered = sorted(markers, key=lambda m: float(m[0]))
        points = []
        qn = 0.0
        prev_t, prev_bpm = 0.0, check_tempo(ordered[0][1])
        for time_s, bpm, num, den in ordered:
            time_s = max(0.0, _finite("tempo marker time", time_s))
            qn += (time_s - prev_t) * prev_bpm / 60.0
            points.append(TempoPoint(qn, bpm, int(num), int(den)))
            prev_t, prev_bpm = time_s, check_tempo(bpm)
        return cls(points)

    def to_list(self) -> list[dict]:
        return [{"qn": p.qn, "time": s, "bpm": p.bpm, "num": p.num, "den": p.den}
                for p, s in zip(self.points, self._sec)]

    def is_constant(self) -> bool:
        return len(self.points) == 1

    # -- lookups
    def _index_qn(self, qn: float) -> int:
        return max(0, bisect.bisect_right(self._qn, qn) - 1)

    def _index_sec(self, seconds: float) -> int:
        return max(0, bisect.bisect_right(self._sec, seconds) - 1)

    def point_at_qn(self, qn: float) -> TempoPoint:
        return self.points[self._index_qn(qn)]

    def point_at_seconds(self, seconds: float) -> TempoPoint:
        return self.points[self._index_sec(seconds)]

    # -- conversions
    def qn_to_seconds(self, qn: float) -> float:
        qn = _finite("beat position", qn)
        i = self._index_qn(qn)
        return self._sec[i] + (qn - self._qn[i]) * 60.0 / self.points[i].bpm

    def seconds_to_qn(self, seconds: float) -> float:
        seconds = _finite("time", seconds)
        i = self._index_sec(seconds)
        return self._qn[i] + (seconds - self._sec[i]) * self.points[i].bpm / 60.0

    def qn_to_bar(self, qn: float) -> float:
        """Bars since the project start (0-based, fractional)."""
        qn = _finite("beat position", qn)
        i = self._index_qn(qn)
        p = self.points[i]
        return self._bar[i] + (qn - self._qn[i]) / bar_length_qn(p.num, p.den)

    def bar_to_qn(self, bar: float) -> float:
        bar = _finite("bar", bar)
        i = max(0, bisect.bisect_right(self._bar, bar) - 1)
        p = self.points[i]
        return self._qn[i] + (bar - self._bar[i]) * bar_length_qn(p.num, p.den)

    def seconds_to_bar(self, seconds: float) -> float:
        return self.qn_to_bar(self.seconds_to_qn(seconds))

    def bar_to_seconds(self, bar: float) -> float:
        return self.qn_to_seconds(self.bar_to_qn(bar))


TempoLike = TempoMap | float | int


def as_tempo_map(tempo: TempoLike, numerator: int = 4, denominator: int = 4) -> TempoMap:
    if isinstance(tempo, TempoMap):
        return tempo
    return TempoMap.constant(float(tempo), numerator, denominator)


def beats_to_seconds(qn: float, tempo: TempoLike) -> float:
    return as_tempo_map(tempo).qn_to_seconds(qn)


def seconds_to_beats(seconds: float, tempo: TempoLike) -> float:
    return as_tempo_map(tempo).seconds_to_qn(seconds)


def beats_to_samples(qn: float, tempo: TempoLike, sample_rate: int) -> int:
    return seconds_to_samples(beats_to_seconds(qn, tempo), sample_rate)


def samples_to_beats(samples: int, tempo: TempoLike, sample_rate: int) -> float:
    return seconds_to_beats(samples_to_seconds(samples, sample_rate), tempo)


# ------------------------------------------------------------------ regions
@dataclass(frozen=True)
class Region:
    """A span of the project timeline in seconds (start inclusive, end exclusive)."""

    start_s: float
    end_s: float

    def __post_init__(self):
        start = _finite("region start", self.start_s)
        end = _finite("region end", self.end_s)
        if start < 0:
            raise GridError(f"region start {start:g} s is negative")
        if end <= start:
            raise GridError(f"region end {end:g} s is not after its start {start:g} s")
        object.__setattr__(self, "start_s", start)
        object.__setattr__(self, "end_s", end)

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s

    @classmethod
    def from_beats(cls, start_qn: float, end_qn: float, tempo: TempoLike) -> Region:
        m = as_tempo_map(tempo)
        return cls(m.qn_to_seconds(start_qn), m.qn_to_seconds(end_qn))

    def to_beats(self, tempo: TempoLike) -> tuple[float, float]:
        m = as_tempo_map(tempo)
        return m.seconds_to_qn(self.start_s), m.seconds_to_qn(self.end_s)

    def samples(self, sample_rate: int) -> int:
        return span_samples(self.start_s, self.end_s, sample_rate)


def snap_region_to_bars(region: Region, tempo: TempoLike, mode: str = "nearest") -> Region:
    """Move both edges onto bar lines. `mode`: nearest, outward (never shrinks) or inward.

    The result is always at least one bar long.
    """
    if mode not in ("nearest", "outward", "inward"):
        raise GridError(f"snap mode {mode!r} is not one of nearest, outward, inward")
    m = as_tempo_map(tempo)
    start_bar = m.seconds_to_bar(region.start_s)
    end_bar = m.seconds_to_bar(region.end_s)
    eps = 1e-6  # a hair of float noise must not push an edge to the next bar
    if mode == "nearest":
        s, e = math.floor(start_bar + 0.5), math.floor(end_bar + 0.5)
    elif mode == "outward":
        s, e = math.floor(start_bar + eps), math.ceil(end_bar - eps)
    else:
        s, e = math.ceil(start_bar - eps), math.floor(end_bar + eps)
    s = max(s, 0)
    if e <= s:
        e = s + 1
    return Region(m.bar_to_seconds(s), m.bar_to_seconds(e))


def region_bars(region: Region, tempo: TempoLike) -> tuple[float, float]:
    """(first bar, number of bars) of a region; the first bar is 0-based and may be fractional."""
    m = as_tempo_map(tempo)
    a, b = m.seconds_to_bar(region.start_s), m.seconds_to_bar(region.end_s)
    return a, b - a


# ------------------------------------------------------------------ context windows
@dataclass(frozen=True)
class ContextWindow:
    """The span of project audio given to the model, and the part of it to (re)generate.

    `start_s`/`end_s` are project times; `repaint_start_s`/`repaint_end_s` are relative to
    `start_s` (what the engine's `repainting_start`/`repainting_end` want).
    """

    start_s: float
    end_s: float
    region: Region
    repaint_start_s: float
    repaint_end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def context_window(region: Region, *, min_window_s: float = MIN_CONTEXT_S,
                   max_window_s: float = DEFAULT_MAX_CONTEXT_S, fill_ratio: float = FULL_MASK_RATIO,
                   pad_s: float = FULL_MASK_PAD_S, tempo: TempoLike | None = None) -> ContextWindow:
    """Model input around `region`: at least `min_window_s`, centred on the region where the
    project start allows, padded by `pad_s` per side when the region fills >= `fill_ratio`
    of the window (more padding where 1 s is not enough), widened to whole bars when `tempo` is
    given, never longer than `max_window_s`.
    """
    max_window_s = min(_finite("max_window_s", max_window_s), MAX_DURATION_S)
    if min_window_s > max_window_s:
        raise GridError(f"min context {min_window_s:g} s is longer than max context {max_window_s:g} s")
    length = region.length_s
    if length > max_window_s:
        raise GridError(f"the region is {length:.2f} s, longer than the engine's context limit {max_window_s:g} s")

    extra = max(0.0, min_window_s - length)
    start, end = region.start_s - extra / 2, region.end_s + extra / 2
    if start < 0:
        end, start = end - start, 0.0
    if length / (end - start) >= fill_ratio:
        # At least `pad_s` per side, more for long regions so the mask really drops below the ratio.
        pad = max(pad_s, (length / fill_ratio - (end - start)) / 2 + 0.01)
        start, end = start - pad, end + pad
        if start < 0:
            end, start = end - start, 0.0
    if tempo is not None:
        m = as_tempo_map(tempo)
        bar_start = m.bar_to_seconds(math.floor(m.seconds_to_bar(start) + 1e-6))
        bar_end = m.bar_to_seconds(math.ceil(m.seconds_to_bar(end) - 1e-6))
        if bar_end - max(bar_start, 0.0) <= max_window_s:
            start, end = max(bar_start, 0.0), bar_end
    if end - start > max_window_s:
        # Shrink the margins on both sides in proportion, keeping the whole region.
        left, right = region.start_s - start, end - region.end_s
        keep = (max_window_s - length) / (left + right)
        start, end = region.start_s - left * keep, region.end_s + right * keep
    return ContextWindow(start, end, region, region.start_s - start, region.end_s - start)


def continuation_window(region: Region, new_length_s: float, *, min_window_s: float = MIN_CONTEXT_S,
                        max_window_s: float = DEFAULT_MAX_CONTEXT_S) -> ContextWindow:
    """Window for continuing after `region`: context ends at the region's end, the new part of
    `new_length_s` follows it (the engine outpaints past the end of the source audio).

    The context is at least the region itself, and longer if needed to reach `min_window_s`.
    The returned window's `region` is the new part.
    """
    new_length_s = _finite("continuation length", new_length_s)
    if new_length_s <= 0:
        raise GridError(f"continuation length {new_length_s:g} s must be positive")
    max_window_s = min(_finite("max_window_s", max_window_s), MAX_DURATION_S)
    new_part = Region(region.end_s, region.end_s + new_length_s)
    end = new_part.end_s
    start = min(region.start_s, end - min_window_s)
    start = max(start, end - max_window_s, 0.0)
    if new_part.start_s - start <= 0:
        raise GridError("continuation needs some audio before the end of the region")
    return ContextWindow(start, end, new_part, new_part.start_s - start, new_part.end_s - start)
