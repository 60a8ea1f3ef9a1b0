"""The two-phase planner run (upstream `generate_with_stop_condition`, PyTorch backend semantics).

Phase 1 ("cot") writes the chain of thought under the FSM, without CFG, and stops with EOS in
place of </think>. It is skipped when bpm, keyscale, timesignature and duration are all given
(or `use_cot_metas` is off). Phase 2 ("codes", only for infer_type "llm_dit") re-serialises the
metadata as YAML CoT, appends it to the prompt with the assistant turn left open, and writes
exactly int(duration * 5) audio codes, with CFG against an unconditional prompt when cfg > 1.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.lm import constants as C
from engine.lm.cot import format_cot, parse_codes, parse_output
from engine.lm.decode import DecodeRecord, Sampling, decode
from engine.lm.fsm import MetadataFSM
from engine.lm.model import LanguageModel
from engine.lm.tables import Tree
from engine.types import ProgressEvent

ProgressFn = Callable[[ProgressEvent], None]


@dataclass
class LMCall:
    """The arguments of one planner run (upstream names; see `call_from_request`)."""

    caption: str = ""
    lyrics: str = ""
    infer_type: str = "llm_dit"               # "dit" = phase 1 only
    temperature: float = 0.85
    cfg_scale: float = 2.0
    negative_prompt: str = C.DEFAULT_NEGATIVE_PROMPT
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    target_duration: float | None = None      # seconds (float); None / <= 0 = not given
    user_metadata: dict[str, Any] | None = None
    use_cot_metas: bool = True
    use_cot_caption: bool = True
    use_cot_language: bool = True
    use_constrained_decoding: bool = True
    trees: dict[str, Tree] | None = None      # candidate sets from lm_constraints
    guard: bool = True                        # FSM safety rails (see engine.lm.fsm)
    caption_max_tokens: int = C.CAPTION_MAX_TOKENS
    seed: int | None = None


@dataclass
class PhaseResult:
    generation_phase: str
    prompt: str
    prompt_ids: list[int]
    uncond_prompt: str | None
    input_ids: list[list[int]]                # the rows actually fed (CFG: left-padded pair)
    attention_mask: list[list[int]]
    generated_ids: list[int]
    output_text: str
    target_codes: int | None
    max_new_tokens: int
    record: DecodeRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"generation_phase": self.generation_phase, "prompt": self.prompt,
                "uncond_prompt": self.uncond_prompt, "generated_ids": list(self.generated_ids)}


@dataclass
class LMResult:
    metadata: dict[str, Any]
    audio_codes: str
    audio_code_values: list[int]
    cot_text: str                              # the CoT block phase 2 uses (or would use)
    phases: list[PhaseResult] = field(default_factory=list)
    seed: int | None = None


def has_all_metas(user_metadata: dict | None) -> bool:
    return bool(user_metadata) and all(k in user_metadata for k in ("bpm", "keyscale", "timesignature", "duration"))


def max_new_tokens_for(target_duration: float | None, phase: str, duration_max: int) -> int:
    """Upstream's budget: codes = clamp(duration, 10, max) * 5 (+10 in phase 2, +500 otherwise)."""
    if target_duration is not None and target_duration > 0:
        upper = min(duration_max, C.DURATION_MAX)
        codes = int(max(C.DURATION_MIN, min(upper, target_duration)) * C.CODES_PER_SECOND)
        budget = codes + (10 if phase == "codes" else 500)
    else:
        budget = min(4096, C.COT_MAX_NEW_TOKENS)
    return min(budget, C.MAX_MODEL_LEN - 64)


def cot_prompt(lm: LanguageModel, caption: str, lyrics: str) -> str:
    return lm.chat(C.GENERATE_INSTRUCTION, f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n")


def codes_prompt(lm: LanguageModel, caption: str, lyrics: str, cot_text: str) -> str:
    """Template output + CoT + blank line: the assistant turn stays open for the codes."""
    return cot_prompt(lm, caption, lyrics) + cot_text + "\n\n"


def uncond_codes_prompt(lm: LanguageModel, negative_prompt: str) -> str:
    text = negative_prompt.strip() if negative_prompt else ""
    user = negative_prompt if text and text != C.DEFAULT_NEGATIVE_PROMPT else C.DEFAULT_NEGATIVE_PROMPT
    return lm.chat(C.GENERATE_INSTRUCTION, user) + "<think>\n\n</think>" + "\n\n"


def make_generator(device: str, seed: int | None) -> tuple[torch.Generator, int]:
    if seed is None or seed < 0:
        seed = random.randint(0, 2 ** 32 - 1)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen, int(seed)


def run_phase(lm: LanguageModel, *, phase: str, prompt: str, uncond_prompt: str | None, sampling: Sampling,
              fsm: MetadataFSM | None, max_new_tokens: int, generator: torch.Generator | None,
              progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None,
              record: bool = False) -> PhaseResult:
    prompt_ids, _ = lm.tokenize(prompt)
    if uncond_prompt is not None:
        input_ids, mask = lm.tokenize_pair(prompt, uncond_prompt)
    else:
        input_ids, mask = prompt_ids, torch.ones_like(prompt_ids)
    stage = "lm_codes" if phase == "codes" else "lm_cot"
    total = fsm.target_codes if (fsm is not None and phase == "codes" and fsm.target_codes) else max_new_tokens

    def on_token(step: int, _token: int) -> None:
        if progress is not None:
            progress(ProgressEvent(stage, min(step + 1, total), total,
                                   "writing audio codes" if phase == "codes" else "writing the chain of thought"))

    rec = DecodeRecord() if record else None
    stop_ids = tuple(t for t in (lm.eos_token_id, lm.pad_token_id) if t is not None)
    tokens = decode(lm.model, input_ids, mask, fsm, sampling, max_new_tokens, stop_ids,
                    generator=generator, on_token=on_token, cancel=cancel, record=rec)
    return PhaseResult(phase, prompt, prompt_ids[0].tolist(), uncond_prompt, input_ids.tolist(), mask.tolist(),
                       tokens, lm.decode_text(tokens), fsm.target_codes if fsm is not None else None,
                       max_new_tokens, rec)


def generate_plan(lm: LanguageModel, call: LMCall, progress: ProgressFn | None = None,
                  cancel: Callable[[], bool] | None = None, record: bool = False) -> LMResult:
    """Run phase 1 and/or phase 2 for one item; see the module docstring."""
    if call.infer_type not in ("dit", "llm_dit"):
        raise ValueError(f"infer_type must be 'dit' or 'llm_dit', got {call.infer_type!r}")
    generator, seed = make_generator(lm.device, call.seed)
    user = dict(call.user_metadata or {})
    phases: list[PhaseResult] = []
    base = Sampling(temperature=call.temperature, top_k=call.top_k, top_p=call.top_p,
                    repetition_penalty=call.repetition_penalty, cfg_scale=1.0)
    constrained = call.use_constrained_decoding

    if not has_all_metas(user) and call.use_cot_metas:
        fsm = MetadataFSM(lm.tables, phase="cot", stop_at_reasoning=True, user_metadata=user,
                          skip_caption=not call.use_cot_caption, skip_language=not call.use_cot_language,
                          skip_genres=True, trees=call.trees, guard=call.guard,
                          caption_max_tokens=call.caption_max_tokens) if constrained else None
        cot_budget = max_new_tokens_for(None, "cot", lm.tables.duration_max)
        phase1 = run_phase(lm, phase="cot", prompt=cot_prompt(lm, call.caption, call.lyrics), uncond_prompt=None,
                           sampling=base, fsm=fsm, max_new_tokens=cot_budget,
                           generator=generator, progress=progress, cancel=cancel, record=record)
        phases.append(phase1)
        metadata, _ = parse_output(phase1.output_text)
    else:
        metadata = {k: v for k, v in user.items() if v is not None}

    target = call.target_duration
    if (target is None or target <= 0) and metadata.get("duration"):
        try:
            cot_duration = float(metadata["duration"])
            if cot_duration > 0:
                target = cot_duration
        except (TypeError, ValueError):
            pass
    cot_text = format_cot(metadata)
    if call.infer_type == "dit":
        return LMResult(metadata, "", [], cot_text, phases, seed)

    use_cfg = call.cfg_scale > 1.0
    fsm2 = MetadataFSM(lm.tables, phase="codes", stop_at_reasoning=False, user_metadata=None,
                       skip_caption=True, skip_language=True, skip_genres=True,
                       target_duration=target, guard=call.guard) if constrained else None
    phase2 = run_phase(lm, phase="codes", prompt=codes_prompt(lm, call.caption, call.lyrics, cot_text),
                       uncond_prompt=uncond_codes_prompt(lm, call.negative_prompt) if use_cfg else None,
                       sampling=Sampling(call.temperature, call.top_k, call.top_p, call.repetition_penalty,
                                         call.cfg_scale if use_cfg else 1.0),
                       fsm=fsm2, max_new_tokens=max_new_tokens_for(target, "codes", lm.tables.duration_max),
                       generator=generator, progress=progress, cancel=cancel, record=record)
    phases.append(phase2)
    codes, values = parse_codes(phase2.output_text)
    return LMResult(metadata, codes, values, cot_text, phases, seed)
