"""Turn the window's form values and the host's metas into a `GenerationRequest` (no Qt here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bridge.actions import ACTION_NAMES as ACTIONS  # the one action table, shared with the bridge
from bridge.actions import ACTIONS as ACTION_SPECS
from bridge.actions import BASE_DIT
from engine.request import TIME_SIGNATURES, GenerationRequest, RequestError, is_valid_keyscale, normalize_timesignature

CONTINUE_DEFAULT_S = 10.0
# A new take without a duration and without a DAW selection: shown in the form, never a silent 120 s.
DEFAULT_DURATION_S = 30.0

# LM constraint field -> request field it stands for
LM_FIELDS = {
    "bpm": "bpm",
    "duration": "duration",
    "keyscale": "keyscale",
    "language": "vocal_language",
    "timesignature": "timesignature",
}
LM_MODES = ("known", "free", "candidates")
_CLEARED = {"bpm": None, "duration": None, "keyscale": "", "vocal_language": "unknown", "timesignature": ""}


@dataclass
class HostValues:
    """The metas in effect (followed from the host or overridden by hand) and the selection."""

    bpm: float | None = None
    timesignature: str = ""
    keyscale: str = ""
    selection: tuple[float, float] | None = None  # seconds

    def selection_length(self) -> float | None:
        if self.selection is None:
            return None
        length = self.selection[1] - self.selection[0]
        return length if length > 0 else None


@dataclass
class PromptValues:
    caption: str = ""
    lyrics: str = "[Instrumental]"
    vocal_language: str = "unknown"
    duration: float = 0.0          # 0 = from the selection, else DEFAULT_DURATION_S
    dit: str | None = None
    inference_steps: int = 0       # 0 = the model's default (8 turbo, 50 base/sft)
    shift: float = 3.0
    guidance_scale: float = 7.0
    seed: int | None = None        # None = a new random seed each time
    batch_size: int = 1
    audio_cover_strength: float = 1.0
    repaint_mode: str = "balanced"
    repaint_strength: float = 0.5
    src_audio: str = ""            # a file to work on when no DAW provides one
    reference_audio: str = ""
    region: tuple[float, float] | None = None  # repaint region inside src_audio (s) when no selection
    track_name: str = "vocals"                 # for Extract
    stems: tuple[str, ...] = ("drums", "bass", "vocals")  # for Stems
    thinking: bool = False         # use the 5 Hz LM planner
    lm_modes: dict[str, str] = field(default_factory=dict)       # field -> known | free | candidates
    lm_candidates: dict[str, str] = field(default_factory=dict)  # field -> text typed by the user
    lora: str | None = None           # None = the engine's default adapter, "" = none
    lora_scale: float | None = None


def parse_candidates(name: str, text: str) -> list[Any]:
    """Parse a candidate set typed by the musician, e.g. bpm '118-124', keyscale 'A minor, C major'."""
    text = (text or "").strip()
    if not text:
        raise RequestError("lm_constraints", f"{name}: no candidates given")
    if name in ("bpm", "duration"):
        separator = "-" if "-" in text.strip("-") else ","
        parts = [p.strip() for p in text.split(separator) if p.strip()]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise RequestError("lm_constraints", f"{name}: '{text}' is not a range like 118-124") from None
        if len(numbers) == 1:
            numbers = numbers * 2
        if len(numbers) != 2 or numbers[0] > numbers[1]:
            raise RequestError("lm_constraints", f"{name}: '{text}' is not a range like 118-124 (low-high)")
        return [int(round(n)) for n in numbers] if name == "bpm" else numbers
    items = [p.strip() for p in text.split(",") if p.strip()]
    for item in items:
        if name == "keyscale" and not is_valid_keyscale(item):
            raise RequestError("lm_constraints", f"keyscale: '{item}' is not a key like 'F# minor'")
        if name == "timesignature" and normalize_timesignature(item) not in TIME_SIGNATURES:
            raise RequestError("lm_constraints", f"timesignature: '{item}' must be one of 2, 3, 4, 6")
    if name == "timesignature":
        items = [normalize_timesignature(i) for i in items]
    return items


def _metas(values: PromptValues, host: HostValues, action: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Request fields for the metas and the LM constraints, after the known/free/candidates modes."""
    duration = values.duration if values.duration > 0 else None
    if duration is None and action == "generate":
        duration = host.selection_length() or DEFAULT_DURATION_S
    fields: dict[str, Any] = {
        "bpm": int(round(host.bpm)) if host.bpm else None,
        "keyscale": host.keyscale or "",
        "timesignature": normalize_timesignature(host.timesignature) if host.timesignature else "",
        "vocal_language": values.vocal_language or "unknown",
        "duration": duration,
    }
    if fields["timesignature"] not in ("",) + TIME_SIGNATURES:
        fields["timesignature"] = ""  # e.g. 7/8: the model knows only 2, 3, 4 and 6
    constraints: dict[str, Any] = {}
    for name, request_field in LM_FIELDS.items():
        mode = values.lm_modes.get(name, "known")
        if mode not in LM_MODES:
            raise RequestError("lm_constraints", f"{name}: mode {mode!r} is not one of {', '.join(LM_MODES)}")
        if mode == "known":
            continue
        if request_field != "duration" or action == "generate":
            fields[request_field] = _CLEARED[request_field]
        if mode == "candidates":
            constraints[name] = parse_candidates(name, values.lm_candidates.get(name, ""))
    return fields, constraints or None


def prompt_fields(action: str, values: PromptValues, host: HostValues) -> dict[str, Any]:
    """The request fields the window owns (everything but the task, source and region)."""
    if action not in ACTIONS:
        raise RequestError("action", f"{action!r} is not one of: {', '.join(ACTIONS)}")
    metas, constraints = _metas(values, host, action)
    fields: dict[str, Any] = {
        "caption": values.caption.strip(),
        "lyrics": values.lyrics.strip() or "[Instrumental]",
        "inference_steps": values.inference_steps or None,
        "shift": values.shift,
        "guidance_scale": values.guidance_scale,
        "seed": values.seed,
        "batch_size": values.batch_size,
        "audio_cover_strength": values.audio_cover_strength,
        "repaint_mode": values.repaint_mode,
        "repaint_strength": values.repaint_strength,
        "thinking": values.thinking,
        "lm_constraints": constraints,
        **metas,
    }
    if values.dit:
        fields["dit"] = values.dit
    elif ACTION_SPECS[action].base_dit:
        fields["dit"] = BASE_DIT  # a turbo DiT cannot do stems; the engine switches for this job
    if values.lora is not None:
        fields["lora"] = values.lora
    if values.lora_scale is not None:
        fields["lora_scale"] = values.lora_scale
    if values.reference_audio.strip():
        fields["reference_audio"] = values.reference_audio.strip()
    if action == "extract":
        fields["track_name"] = values.track_name
    return fields


# request field, LM constraint name, HostValues follow flag
_HOST_METAS = (("bpm", "bpm", "tempo"), ("keyscale", "keyscale", "key"), ("timesignature", "timesignature", "meter"))


def bridge_overrides(action: str, values: PromptValues, host: HostValues,
                     following: dict[str, bool]) -> dict[str, Any]:
    """Fields for `BridgeApp.run_action`: the bridge supplies source, region, duration and the metas
    it reads from the host (tempo-map exact), so a meta is passed only when overridden by hand or
    changed by the LM mode; `following` says which of tempo / key / meter follow the host."""
    fields = prompt_fields(action, values, host)
    for request_field, lm_name, follow_key in _HOST_METAS:
        if following.get(follow_key, True) and values.lm_modes.get(lm_name, "known") == "known":
            fields.pop(request_field, None)
    if values.duration <= 0 and values.lm_modes.get("duration", "known") == "known":
        fields.pop("duration", None)
    if action == "stems":
        fields["stems"] = list(values.stems)  # a bridge key: one extract job per stem
    return fields


def build_requests(action: str, values: PromptValues, host: HostValues,
                   source_duration_s: float | None = None) -> list[GenerationRequest]:
    """The engine requests for one task button: one each, except Stems (one per chosen stem)."""
    if action != "stems":
        return [build_request(action, values, host, source_duration_s)]
    if not values.stems:
        raise RequestError("track_name", "Stems needs at least one stem ticked")
    return [build_request("extract", dataclasses.replace(values, track_name=stem), host) for stem in values.stems]


def build_request(action: str, values: PromptValues, host: HostValues,
                  source_duration_s: float | None = None) -> GenerationRequest:
    """A validated request for the engine directly (no DAW render): source tasks use `values.src_audio`.

    `source_duration_s` is the length of `src_audio`, needed by "continue". Raises `RequestError`.
    """
    if action == "stems":
        raise RequestError("action", "Stems makes several requests: use build_requests")
    fields = prompt_fields(action, values, host)
    fields["task_type"] = ACTION_SPECS[action].task_type
    if action != "generate":
        if not values.src_audio.strip():
            raise RequestError("src_audio", f"'{action}' needs source audio: select a region in the DAW "
                                            "or choose a source file")
        fields["src_audio"] = values.src_audio.strip()
    if action == "repaint":
        region = values.region or host.selection
        if region is None:
            raise RequestError("repainting_start", "repaint needs a region: select one in the DAW or set "
                                                   "the region fields")
        fields["repainting_start"], fields["repainting_end"] = float(region[0]), float(region[1])
    elif action == "continue":
        if not source_duration_s:
            raise RequestError("src_audio", "cannot continue: the length of the source file is unknown")
        extra = values.duration if values.duration > 0 else CONTINUE_DEFAULT_S
        fields["repainting_start"] = float(source_duration_s)
        fields["repainting_end"] = float(source_duration_s) + extra
        fields["duration"] = None
    return GenerationRequest.from_dict(fields)
