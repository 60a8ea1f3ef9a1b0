"""The one request schema, with upstream ACE-Step 1.5's public parameter names.

The CLI (`render`, `plan`), the HTTP API, the DAW bridge and the GUI all build a
`GenerationRequest`. This module is plain Python (no torch) so that clients can
import it. Validation errors are `RequestError`s that name the offending field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from engine.units import MAX_DURATION_S

TASK_TYPES = ("text2music", "repaint", "cover", "lego", "extract", "complete")
SOURCE_TASKS = ("repaint", "cover", "lego", "extract", "complete")
# Tasks only the base DiT was trained for: a turbo DiT refuses them.
BASE_ONLY_TASKS = ("lego", "extract", "complete")
TRACK_NAMES = (
    "woodwinds", "brass", "fx", "synth", "strings", "percussion",
    "keyboard", "guitar", "bass", "drums", "backing_vocals", "vocals",
)
REPAINT_MODES = ("conservative", "balanced", "aggressive")
CHUNK_MASK_MODES = ("explicit", "auto")
DCW_MODES = ("double", "low", "high", "pix")
TIME_SIGNATURES = ("2", "3", "4", "6")
KEY_NOTES = ("A", "B", "C", "D", "E", "F", "G")
KEY_ACCIDENTALS = ("", "#", "b", "♯", "♭")
KEY_MODES = ("major", "minor")
AUDIO_FORMATS = ("wav", "flac")
MAX_BATCH_SIZE = 8
BPM_RANGE = (30, 300)

# Options upstream accepts that this engine does not implement: only the value it honours passes;
# anything else is refused with a RequestError naming the field (HTTP 422), never silently ignored.
HONOURED_ONLY = {
    "infer_method": ("ode", "the SDE sampler is not implemented; use 'ode'"),
    "sampler_mode": ("euler", "only the Euler sampler is implemented; use 'euler'"),
    "cover_noise_strength": (0.0, "cover noise blending is not implemented; leave it at 0"),
    "dcw_wavelet": ("haar", "only the Haar wavelet is implemented; use 'haar'"),
}


class RequestError(ValueError):
    """A request field is missing, of the wrong type, or out of range."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


@dataclass
class GenerationRequest:
    # What to make
    task_type: str = "text2music"
    caption: str = ""
    lyrics: str = "[Instrumental]"
    vocal_language: str = "unknown"
    bpm: int | None = None
    keyscale: str = ""
    timesignature: str = ""
    duration: float | None = None  # seconds; None (or <= 0) = from the source, else upstream's fallback
    # Audio inputs (paths, or file ids the service resolves to paths)
    src_audio: str | None = None
    reference_audio: str | None = None
    audio_codes: str | list[int] | None = None
    repainting_start: float = 0.0
    repainting_end: float = -1.0  # -1 = end of the source
    audio_cover_strength: float = 1.0
    track_name: str | None = None
    track_classes: list[str] | None = None
    repaint_mode: str = "balanced"
    repaint_strength: float = 0.5
    chunk_mask_mode: str = "explicit"
    # Sampler
    dit: str | None = None  # checkpoint sub-folder; None = the engine's loaded DiT
    inference_steps: int | None = None  # None = 8 for turbo, 50 for base/sft
    guidance_scale: float = 7.0  # ignored by turbo models
    shift: float = 3.0
    use_adg: bool = False
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    infer_method: str = "ode"
    sampler_mode: str = "euler"
    cover_noise_strength: float = 0.0
    dcw_enabled: bool | None = None  # None = on for turbo, off otherwise
    dcw_mode: str = "double"
    dcw_scaler: float = 0.05
    dcw_high_scaler: float = 0.02
    dcw_wavelet: str = "haar"
    # LoRA adapter on the DiT: a folder under checkpoints/loras/ ("" = none; None = the engine's
    # current adapter, set with /v1/lora/load), and its strength 0-1 (None = that adapter's scale)
    lora: str | None = None
    lora_scale: float | None = None
    # Seeds and variants
    seed: int | None = None  # None or -1 = random
    seeds: list[int] | None = None  # one per batch item; overrides seed
    batch_size: int = 1
    # Output
    use_tiled_decode: bool = True
    enable_normalization: bool = True
    normalization_db: float = -1.0
    audio_format: str = "wav"
    # Only this part of the output, [start_s, end_s] in seconds of the full output (end -1 = its end);
    # None = all of it. With `output_sample_rate` the cut is made at that rate, sample-exact.
    output_region: list[float] | None = None
    output_sample_rate: int | None = None  # None = 48000 (the model's rate); else resampled with soxr
    # The 5 Hz LM planner
    thinking: bool = False
    lm_temperature: float = 0.85
    lm_cfg_scale: float = 2.0
    lm_top_k: int = 0
    lm_top_p: float = 0.9
    lm_negative_prompt: str = "NO USER INPUT"
    lm_repetition_penalty: float = 1.0
    use_cot_metas: bool = True
    use_cot_caption: bool = True
    use_cot_language: bool = True
    use_constrained_decoding: bool = True
    # Partly known fields for the LM ("constraints from the DAW"): candidate sets.
    # e.g. {"bpm": [118, 124]} (inclusive range), {"keyscale": ["A minor", "C major"]},
    # {"timesignature": ["3", "4"]}, {"language": ["en", "de"]}, {"duration": [60, 90]}.
    lm_constraints: dict[str, Any] | None = None

    # ---------------------------------------------------------------- helpers
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | os.PathLike | None = None,
                  strict: bool = True) -> GenerationRequest:
        """Build and validate a request. Unknown keys are an error when `strict`.

        `src_audio` / `reference_audio` given as relative paths are resolved
        against `base_dir` (the request file's folder) when it is given.
        """
        if not isinstance(data, dict):
            raise RequestError("request", f"expected a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                kwargs[key] = value
            elif strict:
                raise RequestError(key, "unknown field (see `GenerationRequest.field_names()`)")
        req = cls(**kwargs)
        if base_dir is not None:
            for name in ("src_audio", "reference_audio"):
                path = getattr(req, name)
                if isinstance(path, str) and path and not os.path.isabs(path) and "://" not in path:
                    setattr(req, name, os.path.normpath(os.path.join(str(base_dir), path)))
        return req.ensure_valid()

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> GenerationRequest:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise RequestError("request", f"file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise RequestError("request", f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes).ensure_valid()

    def with_inputs(self, **paths: str | None) -> GenerationRequest:
        """A copy with `src_audio` / `reference_audio` swapped for resolved paths, still validated
        (the service resolves `file:<id>` references after checking the request once)."""
        unknown = set(paths) - {"src_audio", "reference_audio"}
        if unknown:
            raise ValueError(f"with_inputs only swaps audio inputs, not {sorted(unknown)}")
        new = dataclasses.replace(self, **paths)
        new._validated = getattr(self, "_validated", False)
        return new

    def ensure_valid(self) -> GenerationRequest:
        """Validate unless this object already was (requests are validated once, at the boundary)."""
        if not getattr(self, "_validated", False):
            self.validate()
            self._validated = True
        return self

    def item_seeds(self) -> list[int] | None:
        """The explicit per-item seeds, or None when any item should be random."""
        if self.seeds is not None:
            return list(self.seeds)
        if self.seed is None or self.seed < 0:
            return None
        if self.batch_size == 1:
            return [self.seed]
        # Our rule for batches from one seed: consecutive seeds, so variant i is reproducible alone.
        return [self.seed + i for i in range(self.batch_size)]

    def has_duration(self) -> bool:
        return self.duration is not None and self.duration > 0

    # ------------------------------------------------------------- validation
    def validate(self) -> None:
        _check_choice("task_type", self.task_type, TASK_TYPES)
        for name in ("caption", "lyrics", "vocal_language", "keyscale", "lm_negative_prompt"):
            _check_type(name, getattr(self, name), str)
        if len(self.caption) > 4096:
            raise RequestError("caption", "longer than 4096 characters")
        if len(self.lyrics) > 16384:
            raise RequestError("lyrics", "longer than 16384 characters")

        if self.bpm is not None:
            self.bpm = _as_int("bpm", self.bpm)
            if not BPM_RANGE[0] <= self.bpm <= BPM_RANGE[1]:
                raise RequestError("bpm", f"{self.bpm} is outside {BPM_RANGE[0]}-{BPM_RANGE[1]}")
        self.keyscale = self.keyscale.strip()
        if self.keyscale and not is_valid_keyscale(self.keyscale):
            raise RequestError("keyscale", f"'{self.keyscale}' is not a key like 'F# minor' or 'Bb major'")
        if self.timesignature is None:
            self.timesignature = ""
        if isinstance(self.timesignature, int) and not isinstance(self.timesignature, bool):
            self.timesignature = str(self.timesignature)
        _check_type("timesignature", self.timesignature, str)
        self.timesignature = self.timesignature.strip()
        if self.timesignature and normalize_timesignature(self.timesignature) not in TIME_SIGNATURES:
            raise RequestError("timesignature", f"'{self.timesignature}' must be one of 2, 3, 4, 6 (or N/4)")
        if self.duration is not None:
            self.duration = _as_float("duration", self.duration)
            if self.duration > MAX_DURATION_S:
                raise RequestError("duration", f"{self.duration} s is longer than {MAX_DURATION_S:.0f} s")
            if 0 < self.duration < 1.0:
                raise RequestError("duration", f"{self.duration} s is too short (at least 1 s)")

        for name in ("src_audio", "reference_audio"):
            value = getattr(self, name)
            if value is not None:
                _check_type(name, value, str)
                if not value:
                    setattr(self, name, None)
        if self.audio_codes is not None:
            if isinstance(self.audio_codes, list):
                self.audio_codes = [_as_int("audio_codes", c) for c in self.audio_codes]
                if any(not 0 <= c < 64000 for c in self.audio_codes):
                    raise RequestError("audio_codes", "codes must lie in 0..63999")
            elif not isinstance(self.audio_codes, str):
                raise RequestError("audio_codes", "expected a '<|audio_code_N|>' string or a list of ints")
            elif not self.audio_codes.strip():
                self.audio_codes = None
        if self.task_type in SOURCE_TASKS and self.src_audio is None:
            if not (self.task_type == "cover" and self.audio_codes):
                raise RequestError("src_audio", f"task '{self.task_type}' needs a source audio file")

        self.repainting_start = _as_float("repainting_start", self.repainting_start)
        self.repainting_end = _as_float("repainting_end", -1.0 if self.repainting_end is None else self.repainting_end)
        if self.repainting_end >= 0 and self.repainting_end <= self.repainting_start:
            raise RequestError("repainting_end", f"{self.repainting_end} s is not after repainting_start "
                                                 f"{self.repainting_start} s")
        self.audio_cover_strength = _in_range("audio_cover_strength", self.audio_cover_strength, 0.0, 1.0)
        self.repaint_strength = _in_range("repaint_strength", self.repaint_strength, 0.0, 1.0)
        _check_choice("repaint_mode", self.repaint_mode, REPAINT_MODES)
        _check_choice("chunk_mask_mode", self.chunk_mask_mode, CHUNK_MASK_MODES)
        if self.track_name is not None:
            _check_choice("track_name", self.track_name, TRACK_NAMES)
        if self.track_classes is not None:
            if isinstance(self.track_classes, str):
                self.track_classes = [self.track_classes]
            _check_type("track_classes", self.track_classes, list)
            for name in self.track_classes:
                _check_choice("track_classes", name, TRACK_NAMES)

        if self.dit is not None:
            _check_type("dit", self.dit, str)
        if self.lora is not None:
            _check_type("lora", self.lora, str)
            self.lora = self.lora.strip()
            if "/" in self.lora or "\\" in self.lora or self.lora.startswith("."):
                raise RequestError("lora", f"'{self.lora}' must be an adapter folder name under checkpoints/loras/")
        if self.lora_scale is not None:
            self.lora_scale = _in_range("lora_scale", self.lora_scale, 0.0, 1.0)
        if self.inference_steps is not None:
            self.inference_steps = _as_int("inference_steps", self.inference_steps)
            if not 1 <= self.inference_steps <= 200:
                raise RequestError("inference_steps", f"{self.inference_steps} is outside 1-200")
        self.guidance_scale = _in_range("guidance_scale", self.guidance_scale, 0.0, 30.0)
        self.shift = _in_range("shift", self.shift, 0.01, 20.0)
        self.cfg_interval_start = _in_range("cfg_interval_start", self.cfg_interval_start, 0.0, 1.0)
        self.cfg_interval_end = _in_range("cfg_interval_end", self.cfg_interval_end, 0.0, 1.0)
        self.cover_noise_strength = _in_range("cover_noise_strength", self.cover_noise_strength, 0.0, 1.0)
        for name, (honoured, reason) in HONOURED_ONLY.items():
            if getattr(self, name) != honoured:
                raise RequestError(name, f"{getattr(self, name)!r} is not supported: {reason}")
        _check_choice("dcw_mode", self.dcw_mode, DCW_MODES)
        for name in ("use_adg", "use_tiled_decode", "enable_normalization", "thinking", "use_cot_metas",
                     "use_cot_caption", "use_cot_language", "use_constrained_decoding"):
            _check_type(name, getattr(self, name), bool)
        if self.dcw_enabled is not None:
            _check_type("dcw_enabled", self.dcw_enabled, bool)

        self.batch_size = _as_int("batch_size", self.batch_size)
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise RequestError("batch_size", f"{self.batch_size} is outside 1-{MAX_BATCH_SIZE}")
        if self.seed is not None:
            self.seed = _as_int("seed", self.seed)
            if self.seed >= 2 ** 63:
                raise RequestError("seed", "must fit in 64 bits")
        if self.seeds is not None:
            _check_type("seeds", self.seeds, list)
            self.seeds = [_as_int("seeds", s) for s in self.seeds]
            if len(self.seeds) != self.batch_size:
                raise RequestError("seeds", f"{len(self.seeds)} seeds given for batch_size {self.batch_size}")
            if any(s < 0 or s >= 2 ** 63 for s in self.seeds):
                raise RequestError("seeds", "seeds must be non-negative 64-bit integers")
        _check_choice("audio_format", self.audio_format, AUDIO_FORMATS)
        _check_output_shape(self)
        self._check_numeric_ranges()

        self.lm_temperature = _in_range("lm_temperature", self.lm_temperature, 0.0, 5.0)
        if self.lm_temperature == 0.0:
            raise RequestError("lm_temperature", "must be greater than 0 (use lm_top_k=1 for greedy)")
        self.lm_cfg_scale = _in_range("lm_cfg_scale", self.lm_cfg_scale, 0.0, 20.0)
        self.lm_top_k = _as_int("lm_top_k", self.lm_top_k)
        if self.lm_top_k < 0:
            raise RequestError("lm_top_k", "must be 0 (off) or positive")
        self.lm_top_p = _in_range("lm_top_p", self.lm_top_p, 0.0, 1.0)
        self.lm_repetition_penalty = _in_range("lm_repetition_penalty", self.lm_repetition_penalty, 0.01, 10.0)
        if self.lm_constraints is not None:
            _check_type("lm_constraints", self.lm_constraints, dict)
            allowed = {"bpm", "duration", "keyscale", "language", "timesignature"}
            for key in self.lm_constraints:
                if key not in allowed:
                    raise RequestError("lm_constraints", f"unknown field '{key}' (allowed: {sorted(allowed)})")
            _check_lm_constraints(self.lm_constraints)


    def _check_numeric_ranges(self) -> None:
        """Finite, bounded values for the numeric fields checked nowhere else (HTTP: 422 naming them)."""
        self.normalization_db = _in_range("normalization_db", self.normalization_db, -60.0, 0.0)
        self.dcw_scaler = _in_range("dcw_scaler", self.dcw_scaler, 0.0, 1.0)
        self.dcw_high_scaler = _in_range("dcw_high_scaler", self.dcw_high_scaler, 0.0, 1.0)
        for name in ("repainting_start", "repainting_end", "duration"):
            value = getattr(self, name)
            if value is not None and not -2 * MAX_DURATION_S <= value <= 2 * MAX_DURATION_S:
                raise RequestError(name, f"{value} s is outside -{2 * MAX_DURATION_S:g}..{2 * MAX_DURATION_S:g} s")
        if self.seed is not None and self.seed < -2 ** 63:
            raise RequestError("seed", "must fit in 64 bits")


# ---------------------------------------------------------------- small helpers
OUTPUT_RATE_RANGE = (8000, 192000)


def _check_output_shape(request: GenerationRequest) -> None:
    """`output_region`: [start_s, end_s] with 0 <= start < end (end -1 = the end); `output_sample_rate`."""
    if request.output_region is not None:
        region = request.output_region
        if not isinstance(region, (list, tuple)) or len(region) != 2:
            raise RequestError("output_region", f"expected [start_s, end_s], got {region!r}")
        start, end = (_as_float("output_region", value) for value in region)
        if start < 0:
            raise RequestError("output_region", f"start {start} s is before the output's start")
        if end >= 0 and end <= start:
            raise RequestError("output_region", f"end {end} s is not after start {start} s")
        request.output_region = [start, end]
    if request.output_sample_rate is not None:
        rate = _as_int("output_sample_rate", request.output_sample_rate)
        if not OUTPUT_RATE_RANGE[0] <= rate <= OUTPUT_RATE_RANGE[1]:
            raise RequestError("output_sample_rate", f"{rate} Hz is outside {OUTPUT_RATE_RANGE[0]}-"
                                                     f"{OUTPUT_RATE_RANGE[1]} Hz")
        request.output_sample_rate = rate


def _check_lm_constraints(constraints: dict[str, Any]) -> None:
    """bpm / duration: [low, high] inclusive; keyscale / timesignature / language: non-empty lists."""
    for key in ("bpm", "duration"):
        if key in constraints:
            value = constraints[key]
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise RequestError("lm_constraints", f"{key} must be a [low, high] pair, got {value!r}")
            low, high = (_as_float(f"lm_constraints.{key}", v) for v in value)
            if low > high:
                raise RequestError("lm_constraints", f"{key} range [{low:g}, {high:g}] is empty")
            lo_limit, hi_limit = (BPM_RANGE if key == "bpm" else (10, MAX_DURATION_S))
            if high < lo_limit or low > hi_limit:
                raise RequestError("lm_constraints", f"{key} range [{low:g}, {high:g}] lies outside "
                                                     f"{lo_limit}-{hi_limit:g}")
    for key in ("keyscale", "timesignature", "language"):
        if key not in constraints:
            continue
        value = constraints[key]
        if isinstance(value, str):
            value = [value]
            constraints[key] = value
        if not isinstance(value, (list, tuple)) or not value:
            raise RequestError("lm_constraints", f"{key} must be a non-empty list of candidates, got {value!r}")
        for item in value:
            text = str(item).strip()
            if key == "keyscale" and not is_valid_keyscale(text):
                raise RequestError("lm_constraints", f"keyscale candidate '{text}' is not a key like 'F# minor'")
            if key == "timesignature" and normalize_timesignature(text) not in TIME_SIGNATURES:
                raise RequestError("lm_constraints", f"timesignature candidate '{text}' must be 2, 3, 4 or 6")
            if key == "language" and not (text.isalpha() and text.islower() and 2 <= len(text) <= 7):
                raise RequestError("lm_constraints", f"language candidate '{text}' is not a code like 'en'")


def is_valid_keyscale(text: str) -> bool:
    parts = text.strip().split()
    if len(parts) != 2:
        return False
    note, mode = parts
    return (note[:1] in KEY_NOTES and note[1:] in KEY_ACCIDENTALS and mode.lower() in KEY_MODES)


def normalize_timesignature(text: str) -> str:
    """'3/4' -> '3'; '4' -> '4' (upstream keeps only the numerator in prompts)."""
    text = str(text).strip()
    if "/" in text:
        num, _, den = text.partition("/")
        if den.strip() == "4":
            return num.strip()
        return text
    return text


def _check_type(name: str, value: Any, kind: type) -> None:
    if kind is bool:
        if not isinstance(value, bool):
            raise RequestError(name, f"expected true or false, got {value!r}")
        return
    if not isinstance(value, kind):
        raise RequestError(name, f"expected {kind.__name__}, got {type(value).__name__}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RequestError(name, f"{value!r} is not one of: {', '.join(choices)}")


def _as_int(name: str, value: Any) -> int:
    """A JSON integer (or a float with no fraction); never a string, a bool, NaN or infinity."""
    if isinstance(value, bool):
        raise RequestError(name, f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    raise RequestError(name, f"expected an integer, got {_shown(value)}")


def _as_float(name: str, value: Any) -> float:
    """A finite JSON number; never a string, a bool, NaN, infinity or an integer too big for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(name, f"expected a number, got {_shown(value)}")
    try:
        result = float(value)
    except OverflowError:
        raise RequestError(name, f"{_shown(value)} is out of range") from None
    if not math.isfinite(result):
        raise RequestError(name, f"must be a finite number, got {_shown(value)}")
    return result


def _shown(value: Any) -> str:
    """A short rendering of a bad value for an error message (a 5,000-digit integer is not echoed)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"an integer with {len(str(abs(value)))} digits"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("..." if len(value) > 40 else "")
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def _in_range(name: str, value: Any, lo: float, hi: float) -> float:
    result = _as_float(name, value)
    if not lo <= result <= hi:
        raise RequestError(name, f"{result} is outside {lo}-{hi}")
    return result
