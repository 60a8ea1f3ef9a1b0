"""What each DAW action asks of the engine, and the pure planner that turns an action into jobs.

One table, `ACTIONS`, says for every button/OSC action: the engine task it runs, whether that
task needs a base DiT, how long the selected region may be, what audio the model gets as input
(nothing, a context window around the region, or the audio before the region's end), and where
the clip lands (over the region, or in the new bars after it). The bridge and the control
window (gui/request_builder.py) both read it.

`plan_action(action, overrides, host, config)` is pure: no I/O, no threads, no engine. It takes a
snapshot of the host (`HostView`) and returns an `ActionPlan`: validated engine requests, where
each result goes, and which span of project audio (if any) to send as the source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bridge import grid
from bridge.errors import BridgeError
from bridge.grid import GridError, Region, TempoMap
from engine.request import (
    BASE_ONLY_TASKS,
    TIME_SIGNATURES,
    TRACK_NAMES,
    GenerationRequest,
    RequestError,
    is_valid_keyscale,
)
from engine.units import MAX_REGION_S, MIN_REGION_S, SAMPLE_RATE

BASE_DIT = "acestep-v15-base"

# Keys in `overrides` that steer the bridge rather than the request.
BRIDGE_KEYS = {"region", "region_beats", "bars", "stems", "insert", "source_file", "snap", "priority",
               "source_offset_s", "track_name"}  # the last two: sketch -> part (bridge/sketch.py)
INSERT_MODES = ("replace", "add", "new_track", "none")  # add = on the selected track, nothing removed
SNAP_MODES = ("nearest", "outward", "inward", "off")

# Request fields asking the engine for the clip's span only, at the host rate ("region PCM").
# Sent only when this engine schema knows them; older engines return the whole window.
REGION_PCM_FIELDS = ("output_region", "output_sample_rate")


def engine_takes_region_pcm() -> bool:
    return set(REGION_PCM_FIELDS) <= set(GenerationRequest.field_names())


@dataclass(frozen=True)
class ActionSpec:
    """One DAW action. `source`: "none" (no input audio), "around" (a context window around the
    region) or "before" (the audio up to the region's end; the new part follows it).
    `placement`: "region" (the clip covers the selection) or "after" (the new bars after it)."""

    name: str
    task_type: str
    region_limits_s: tuple[float, float]
    source: str
    placement: str = "region"
    per_stem: bool = False  # one job per chosen stem, each on its own new track

    @property
    def base_dit(self) -> bool:
        return self.task_type in BASE_ONLY_TASKS


_LONG = (MIN_REGION_S, grid.DEFAULT_MAX_CONTEXT_S)
ACTIONS: dict[str, ActionSpec] = {spec.name: spec for spec in (
    ActionSpec("generate", "text2music", _LONG, source="none"),
    ActionSpec("repaint", "repaint", (MIN_REGION_S, MAX_REGION_S), source="around"),
    # continuation is outpainting: a repaint past the end of the source; limits apply to the new part
    ActionSpec("continue", "repaint", (MIN_REGION_S, MAX_REGION_S), source="before", placement="after"),
    ActionSpec("cover", "cover", _LONG, source="around"),
    ActionSpec("stems", "extract", _LONG, source="around", per_stem=True),
    ActionSpec("extract", "extract", _LONG, source="around"),
)}
ACTION_NAMES = tuple(ACTIONS)


class PlanError(BridgeError):
    """The action cannot be planned; the message tells the musician what to fix."""


@dataclass(frozen=True)
class HostView:
    """What the planner needs to know about the DAW, read once per action."""

    tempo_map: TempoMap | None
    region: Region | None = None
    sample_rate: int | None = None
    key: str | None = None
    project_name: str | None = None
    source_file: str | None = None
    can_render: bool = False
    adapters: tuple[str, ...] = ()


@dataclass
class ClipPlan:
    """Where one job's result goes: `region` of the project, from audio starting at `window_start_s`."""

    region: Region
    window_start_s: float
    label: str  # task part of the file name
    new_track: bool = False
    track_name: str = ""


@dataclass
class ActionPlan:
    action: str
    requests: list[dict[str, Any]]  # engine requests, without src_audio (filled in after upload)
    clips: list[ClipPlan]
    tempo_map: TempoMap
    key: str | None
    host_sample_rate: int
    project: str
    source_span: tuple[float, float] | None  # project time of the context audio to send
    source_file: str | None
    insert_mode: str
    priority: str = "interactive"
    source_offset_s: float | None = None  # project time of source_file's first sample (None: the config's)


# ------------------------------------------------------------------ checks and metas
def check_region_length(region: Region, action: str) -> None:
    lo, hi = ACTIONS[action].region_limits_s
    if region.length_s < lo - 1e-9:
        raise GridError(f"the region is {region.length_s:.2f} s; {action} needs at least {lo:g} s")
    if region.length_s > hi + 1e-9:
        raise GridError(f"the region is {region.length_s:.2f} s; {action} allows at most {hi:g} s")


def timesignature_for(num: int, den: int) -> str:
    """The engine's time-signature meta ('2','3','4','6'); '' when the meter has none (5/4, 7/8...)."""
    if den == 4 and str(num) in TIME_SIGNATURES:
        return str(num)
    if (num, den) in ((6, 8), (12, 8)):
        return "6" if num == 6 else "4"
    return ""


def host_metas(tempo_map: TempoMap, at_s: float, key: str | None) -> dict[str, Any]:
    """bpm / keyscale / timesignature request fields for the music at project time `at_s`."""
    point = tempo_map.point_at_seconds(at_s)
    metas: dict[str, Any] = {}
    if 30 <= round(point.bpm) <= 300:
        metas["bpm"] = int(round(point.bpm))
    if key:
        metas["keyscale"] = key
    signature = timesignature_for(point.num, point.den)
    if signature:
        metas["timesignature"] = signature
    return metas


def stems_for(action: str, overrides: dict[str, Any], default_stems: tuple[str, ...]) -> list[str]:
    """The stems to extract, in the order asked."""
    if action == "extract":
        stems = [overrides.get("track_name") or "vocals"]
    else:
        stems = overrides.get("stems") or list(default_stems)
        if isinstance(stems, str):
            stems = [s.strip() for s in stems.split(",") if s.strip()]
    bad = [s for s in stems if s not in TRACK_NAMES]
    if bad:
        raise PlanError(f"unknown stem(s) {', '.join(map(str, bad))}; choose from {', '.join(TRACK_NAMES)}")
    return list(stems)


def _pair(value: Any, name: str) -> tuple[float, float]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            pass
    raise GridError(f"{name} must be two numbers [start, end], got {value!r}")


def _region(overrides: dict[str, Any], host: HostView, tempo_map: TempoMap) -> Region:
    if overrides.get("region") is not None:
        return Region(*_pair(overrides["region"], "region"))
    if overrides.get("region_beats") is not None:
        return Region.from_beats(*_pair(overrides["region_beats"], "region_beats"), tempo_map)
    if host.region is None:
        raise PlanError("no region selected: make a time selection (REAPER) or set the loop brace "
                        "(Ableton), or send /acecomp/region <start_s> <end_s>")
    return host.region


def _on_samples(window: grid.ContextWindow, sample_rate: int) -> grid.ContextWindow:
    """Widen the window edges onto instants that are whole samples both at the host rate and at
    the engine's 48 kHz (every 1/300 s for 44.1 kHz), so renders and cuts are sample-exact at both."""
    step = math.gcd(int(sample_rate), SAMPLE_RATE)
    start = math.floor(window.start_s * step + 1e-9) / step
    end = math.ceil(window.end_s * step - 1e-9) / step
    region = window.region
    return grid.ContextWindow(start, end, region, region.start_s - start, region.end_s - start)


def no_source_message(adapters: tuple[str, ...]) -> str:
    names = ", ".join(adapters) or "none"
    return ("no source audio: no connected DAW can render (adapters: " + names + "). In REAPER run "
            "ace_companion.lua; for Ableton export the song from bar 1 and pass --source-file or send "
            "/acecomp/source <path>")


# ------------------------------------------------------------------ the planner
def plan_action(action: str, overrides: dict[str, Any] | None, host: HostView, config: Any) -> ActionPlan:
    """Plan `action` on the host's selection. `config` is a `BridgeConfig` (defaults for snap,
    insert mode, context sizes, stems, request defaults...). Raises `PlanError`."""
    try:
        return _plan(action, dict(overrides or {}), host, config)
    except GridError as exc:
        raise PlanError(str(exc)) from None


def _plan(action: str, overrides: dict[str, Any], host: HostView, config: Any) -> ActionPlan:
    spec = ACTIONS.get(action)
    if spec is None:
        raise PlanError(f"unknown action '{action}' (one of {', '.join(ACTIONS)})")
    request_over = {k: v for k, v in overrides.items() if k not in BRIDGE_KEYS}
    unknown = sorted(set(request_over) - set(GenerationRequest.field_names()) - set(REGION_PCM_FIELDS))
    if unknown:
        raise PlanError(f"unknown setting(s): {', '.join(unknown)}")
    tempo_map = host.tempo_map
    if tempo_map is None:
        raise PlanError("the host tempo is unknown: start the DAW adapter, or send /acecomp/tempo <bpm>")
    region = _region(overrides, host, tempo_map)
    snap = overrides.get("snap", config.snap)
    if snap not in SNAP_MODES:
        raise PlanError(f"snap {snap!r} is not one of {', '.join(SNAP_MODES)}")
    if snap != "off":
        region = grid.snap_region_to_bars(region, tempo_map, snap)
    insert_mode = overrides.get("insert", config.insert_mode)
    if insert_mode not in INSERT_MODES:
        raise PlanError(f"insert mode {insert_mode!r} is not one of {', '.join(INSERT_MODES)}")
    host_sr = int(host.sample_rate or config.sample_rate)
    key = host.key if isinstance(host.key, str) and is_valid_keyscale(host.key) else None
    project = config.project or host.project_name or "untitled"

    # Where the new audio lands, and the model input around it.
    if spec.placement == "after":
        target = _continuation_part(region, overrides.get("bars", config.continue_bars), tempo_map)
    else:
        target = region
    check_region_length(target, action)
    if spec.source == "none":
        window = grid.ContextWindow(target.start_s, target.end_s, target, 0.0, target.length_s)
        span = None
    elif spec.source == "around":
        window = _on_samples(grid.context_window(target, min_window_s=config.min_context_s,
                                                 max_window_s=config.max_context_s, tempo=tempo_map), host_sr)
        span = (window.start_s, window.end_s)
    else:  # "before": only the existing audio; the engine outpaints the new part
        window = _on_samples(grid.continuation_window(region, target.length_s, min_window_s=config.min_context_s,
                                                      max_window_s=config.max_context_s), host_sr)
        span = (window.start_s, window.region.start_s)

    base = {**config.request_defaults, **host_metas(tempo_map, target.start_s, key), **request_over,
            "task_type": spec.task_type}
    if spec.task_type == "text2music":
        base["duration"] = math.ceil(max(target.length_s, config.min_context_s) * 10) / 10
    if spec.task_type == "repaint":
        base["repainting_start"] = round(window.repaint_start_s, 6)
        base["repainting_end"] = round(window.repaint_end_s, 6)
    if spec.base_dit and not base.get("dit"):
        extract_dit = getattr(config, "extract_dit", BASE_DIT)
        if extract_dit:
            base["dit"] = extract_dit
    if engine_takes_region_pcm():
        base.setdefault("output_region", [round(window.repaint_start_s, 6), round(window.repaint_end_s, 6)])
        base.setdefault("output_sample_rate", host_sr)

    requests: list[dict[str, Any]] = []
    clips: list[ClipPlan] = []
    if spec.per_stem or spec.task_type == "extract":
        for stem in stems_for(action, overrides, tuple(config.stems)):
            requests.append({**base, "track_name": stem})
            clips.append(ClipPlan(target, window.start_s, f"{action}-{stem}", new_track=True, track_name=stem))
    else:
        requests.append(base)
        track_name = str(overrides.get("track_name") or "")  # sketch -> part: a new track of that name
        clips.append(ClipPlan(target, window.start_s, action, new_track=bool(track_name), track_name=track_name))

    for request in requests:  # validate now, before any render or upload
        probe = {k: v for k, v in request.items() if k in GenerationRequest.field_names()}
        if span is not None:
            probe["src_audio"] = "file:pending"
        try:
            GenerationRequest.from_dict(probe)
        except RequestError as exc:
            raise PlanError(f"bad setting: {exc}") from None
    source_file = overrides.get("source_file") or host.source_file or config.source_file
    if span is not None and not source_file and not host.can_render:
        raise PlanError(no_source_message(host.adapters))
    return ActionPlan(action, requests, clips, tempo_map, key, host_sr, project, span,
                      source_file if span is not None else None, insert_mode,
                      overrides.get("priority", "interactive"), overrides.get("source_offset_s"))


def _continuation_part(region: Region, bars: Any, tempo_map: TempoMap) -> Region:
    """The new bars after `region`: as many as the region has, or `bars`."""
    _, region_bars = grid.region_bars(region, tempo_map)
    try:
        n_new = float(bars) if bars is not None else region_bars
    except (TypeError, ValueError):
        raise PlanError(f"continuation length {bars!r} bars is not a number") from None
    if not math.isfinite(n_new) or n_new <= 0:
        raise PlanError(f"continuation length {bars!r} bars must be a positive number")
    end_bar = tempo_map.seconds_to_bar(region.end_s)
    return Region(region.end_s, tempo_map.bar_to_seconds(end_bar + n_new))
