"""The planner inside the engine: request -> LM plan -> request the DiT runs.

`Planner` loads one LM folder once; `plan(request)` maps the request to upstream's LM call
(`call_from_request`, the mapping `inference.generate_music` uses), runs it, and returns an
`LMPlan`. `apply_plan(request, plan)` merges the plan back (spec §9.3):
CoT bpm / keyscale / timesignature / duration fill fields the request leaves empty, the CoT
caption replaces the caption when `use_cot_caption`, and the codes go to `audio_codes` with a
text2music task switched to cover (the DiT then uses them as 5 Hz hints).

`lm_constraints` ("partly known" fields from the DAW) become candidate prefix trees: the FSM
can only write values from the candidate set. Fields the request gives are injected verbatim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.checkpoints import lm_folder_name, resolve_root
from engine.lm import constants as C
from engine.lm.generate import LMCall, LMResult, generate_plan
from engine.lm.model import LanguageModel, default_device
from engine.lm.tables import FSMTables, Tree
from engine.request import GenerationRequest, RequestError, is_valid_keyscale, normalize_timesignature
from engine.types import EngineError, ProgressEvent

# Tasks that never run the LM (upstream `skip_lm_tasks`).
SKIP_LM_TASKS = ("cover", "repaint", "extract")


def default_duration_max(device: str) -> int:
    """Upstream's GPU-tier bound on generated durations: 240 s on CPU, 480 s, or 600 s (>= 24 GB)."""
    if not str(device).startswith("cuda"):
        return C.DEFAULT_DURATION_MAX
    try:
        import torch

        total = torch.cuda.get_device_properties(0).total_memory / 2 ** 30
    except Exception:  # noqa: BLE001 - no device info: stay conservative
        return 480
    return 600 if total >= 24 else 480


@dataclass
class LMPlan:
    metadata: dict[str, Any]
    audio_codes: str
    audio_code_values: list[int]
    cot_text: str
    lm: str
    seed: int | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_result(cls, result: LMResult, lm_name: str) -> LMPlan:
        return cls(result.metadata, result.audio_codes, result.audio_code_values, result.cot_text, lm_name,
                   result.seed, [p.to_dict() for p in result.phases])

    def to_dict(self) -> dict[str, Any]:
        return {"metadata": dict(self.metadata), "audio_code_values": list(self.audio_code_values),
                "audio_codes": self.audio_codes, "cot_text": self.cot_text, "lm": self.lm, "seed": self.seed,
                "phases": list(self.phases)}

    def dump_tensors(self) -> dict[str, Any]:
        """`lm_cot_text` (UTF-8 bytes as uint8) and `lm_audio_codes` (int64) for render --dump."""
        import torch

        return {"lm_cot_text": torch.tensor(list(self.cot_text.encode("utf-8")), dtype=torch.uint8),
                "lm_audio_codes": torch.tensor(self.audio_code_values, dtype=torch.int64)}


def user_metadata_from_request(request: GenerationRequest) -> dict[str, Any] | None:
    """The fields the FSM injects: bpm and duration as ints, keyscale / timesignature as typed."""
    meta: dict[str, Any] = {}
    if request.bpm is not None and request.bpm > 0:
        meta["bpm"] = int(request.bpm)
    if request.keyscale and request.keyscale.strip().lower() != "n/a":
        meta["keyscale"] = request.keyscale.strip()
    if request.timesignature and request.timesignature.strip().lower() != "n/a":
        meta["timesignature"] = request.timesignature.strip()
    if request.duration is not None and request.duration > 0:
        meta["duration"] = int(request.duration)
    return meta or None


def wants_codes(request: GenerationRequest) -> bool:
    return bool(request.thinking) and not request.audio_codes and request.task_type == "text2music"


def call_from_request(request: GenerationRequest, tables: FSMTables | None = None) -> LMCall:
    """Upstream's mapping of a request onto the LM call (plus our candidate trees)."""
    seeds = request.item_seeds()
    return LMCall(
        caption=request.caption or "",
        lyrics=request.lyrics or "",
        infer_type="llm_dit" if wants_codes(request) else "dit",
        temperature=request.lm_temperature,
        cfg_scale=request.lm_cfg_scale,
        negative_prompt=request.lm_negative_prompt,
        top_k=None if not request.lm_top_k else int(request.lm_top_k),
        top_p=None if not request.lm_top_p or request.lm_top_p >= 1.0 else request.lm_top_p,
        repetition_penalty=request.lm_repetition_penalty,
        target_duration=request.duration if request.duration is not None else -1.0,
        user_metadata=user_metadata_from_request(request),
        use_cot_metas=request.use_cot_metas,
        use_cot_caption=request.use_cot_caption,
        use_cot_language=request.use_cot_language,
        use_constrained_decoding=request.use_constrained_decoding,
        trees=constraint_trees(tables, request.lm_constraints) if (tables and request.lm_constraints) else None,
        seed=seeds[0] if seeds else None,
    )


def constraint_trees(tables: FSMTables, constraints: dict[str, Any]) -> dict[str, Tree]:
    """Candidate prefix trees for `lm_constraints` (validated by GenerationRequest)."""
    trees: dict[str, Tree] = {}
    for name, value in constraints.items():
        if name == "bpm":
            lo, hi = _int_range(name, value, C.BPM_MIN, C.BPM_MAX)
            trees[name] = tables.numeric_tree("bpm", range(lo, hi + 1))
        elif name == "duration":
            lo, hi = _int_range(name, value, C.DURATION_MIN, tables.duration_max)
            trees[name] = tables.numeric_tree("duration", range(lo, hi + 1))
        elif name == "keyscale":
            trees[name] = tables.keyscale_tree_for([str(v).strip() for v in value])
        elif name == "timesignature":
            trees[name] = tables.numeric_tree("timesignature", sorted({normalize_timesignature(v) for v in value}))
        elif name == "language":
            trees[name] = tables.value_tree("language", [str(v).strip() for v in value])
        if name in trees and not trees[name]:
            raise RequestError("lm_constraints", f"no usable candidate for '{name}' in {value!r}")
    return trees


def _int_range(name: str, value, lo_limit: int, hi_limit: int) -> tuple[int, int]:
    lo, hi = int(round(float(value[0]))), int(round(float(value[1])))
    lo, hi = max(lo, lo_limit), min(hi, hi_limit)
    if lo > hi:
        raise RequestError("lm_constraints", f"{name} range {list(value)} lies outside {lo_limit}-{hi_limit}")
    return lo, hi


def apply_plan(request: GenerationRequest, plan: LMPlan | dict) -> GenerationRequest:
    """The request the DiT runs after planning (see the module docstring)."""
    if isinstance(plan, dict):
        plan = LMPlan(plan.get("metadata", {}), plan.get("audio_codes", ""), list(plan.get("audio_code_values", [])),
                      plan.get("cot_text", ""), plan.get("lm", ""))
    meta = plan.metadata
    changes: dict[str, Any] = {}
    bpm = meta.get("bpm")
    if request.bpm is None and isinstance(bpm, int) and C.BPM_MIN <= bpm <= C.BPM_MAX:
        changes["bpm"] = bpm
    keyscale = meta.get("keyscale")
    if not request.keyscale and isinstance(keyscale, str) and is_valid_keyscale(keyscale):
        changes["keyscale"] = keyscale
    timesig = meta.get("timesignature")
    known_meter = isinstance(timesig, str) and normalize_timesignature(timesig) in C.VALID_TIME_SIGNATURES
    if not request.timesignature and known_meter:
        changes["timesignature"] = timesig
    duration = meta.get("duration")
    # Source-audio tasks take their length from the source (upstream drops the duration there).
    if request.task_type == "text2music" and not request.has_duration() and isinstance(duration, int) \
            and duration > 0:
        changes["duration"] = float(duration)
    caption = meta.get("caption")
    if request.use_cot_caption and isinstance(caption, str) and caption.strip():
        changes["caption"] = caption
    language = meta.get("language")
    # Our choice (upstream reads a key the CoT never has, so its language never applies):
    # the CoT language fills an unset vocal language when use_cot_language is on.
    if request.use_cot_language and isinstance(language, str) and language in C.VALID_LANGUAGES \
            and request.vocal_language in ("", "unknown"):
        changes["vocal_language"] = language
    if plan.audio_code_values:
        changes["audio_codes"] = plan.audio_codes
        if request.task_type == "text2music":
            changes["task_type"] = "cover"
    return request.replace(**changes) if changes else request


class Planner:
    """One loaded LM that plans requests. Load once, call `plan` per job."""

    def __init__(self, folder: str | Path, device: str | None = None, dtype=None, duration_max: int | None = None):
        device = default_device(device)
        self.lm = LanguageModel(folder, device=device, dtype=dtype,
                                duration_max=duration_max or default_duration_max(device))
        # Upstream's caption budget; tests with random weights lower it (they never end a caption).
        self.caption_max_tokens = C.CAPTION_MAX_TOKENS

    @classmethod
    def from_checkpoints(cls, root: str | Path | None, name: str = "0.6B", device: str | None = None,
                         dtype=None, duration_max: int | None = None) -> Planner:
        return cls(resolve_root(root) / lm_folder_name(name), device=device, dtype=dtype, duration_max=duration_max)

    @property
    def name(self) -> str:
        return self.lm.name

    @staticmethod
    def should_plan(request: GenerationRequest) -> bool:
        """Upstream runs the LM for thinking or any use_cot_* flag, except on source-audio edit tasks."""
        if request.task_type in SKIP_LM_TASKS:
            return False
        return bool(request.thinking or request.use_cot_metas or request.use_cot_caption or request.use_cot_language)

    def plan(self, request: GenerationRequest, progress: Callable[[ProgressEvent], None] | None = None,
             cancel: Callable[[], bool] | None = None, caption_max_tokens: int | None = None) -> LMPlan:
        call = call_from_request(request, self.lm.tables)
        call.caption_max_tokens = caption_max_tokens or self.caption_max_tokens
        try:
            result = generate_plan(self.lm, call, progress=progress, cancel=cancel)
        except RuntimeError as exc:
            raise EngineError(f"LM planning failed: {exc}") from None
        return LMPlan.from_result(result, self.name)

    # ------------------------------------------------------------ text helpers
    def format_caption(self, caption: str, lyrics: str, user_metadata: dict[str, Any] | None = None, **options):
        """Caption rewrite ("format"); see `engine.lm.tasks.format_caption`."""
        from engine.lm.tasks import format_caption

        return format_caption(self.lm, caption, lyrics, user_metadata, **options)

    def simple_mode(self, idea: str, instrumental: bool = False, vocal_language: str | None = None, **options):
        """One-line idea -> caption, lyrics, metas; see `engine.lm.tasks.simple_mode`."""
        from engine.lm.tasks import simple_mode

        return simple_mode(self.lm, idea, instrumental, vocal_language, **options)

    def understand_codes(self, codes, **options):
        """Audio codes -> caption, metas, lyrics; see `engine.lm.tasks.understand_codes`."""
        from engine.lm.tasks import understand_codes

        return understand_codes(self.lm, codes, **options)
