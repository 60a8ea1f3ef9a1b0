"""Other uses of the 5 Hz LM with upstream's instructions (spec §9.2).

* `format_caption` ("format"): caption + lyrics -> a richer caption, metas and formatted lyrics.
* `simple_mode` ("inspiration"): a one-line idea -> caption, lyrics and metas.
* `understand_codes` ("understand"): 5 Hz audio codes -> caption, metas and lyrics.

Each writes a chain of thought under the FSM ("understand" phase: after </think> the text is
free, audio codes blocked) and then free text until EOS. Differences from upstream: genres are
skipped (upstream's genres vocabulary file is not published) and no CFG is used, as upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.lm import constants as C
from engine.lm.cot import extract_after_think, parse_output
from engine.lm.decode import Sampling
from engine.lm.fsm import MetadataFSM
from engine.lm.generate import ProgressFn, make_generator, run_phase
from engine.lm.model import LanguageModel


@dataclass
class LMText:
    """What the text tasks return: parsed metadata fields, lyrics, and the raw output."""

    metadata: dict[str, Any]
    lyrics: str
    output_text: str
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        return str(self.metadata.get("caption", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"metadata": dict(self.metadata), "lyrics": self.lyrics, "caption": self.caption,
                "output_text": self.output_text, "seed": self.seed, **self.extra}


def _run_understand_phase(lm: LanguageModel, prompt: str, *, user_metadata: dict | None, skip_language: bool,
                          temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float,
                          max_new_tokens: int, seed: int | None, caption_max_tokens: int,
                          progress: ProgressFn | None, cancel: Callable[[], bool] | None) -> tuple[str, int]:
    generator, seed = make_generator(lm.device, seed)
    fsm = MetadataFSM(lm.tables, phase="understand", stop_at_reasoning=False, user_metadata=user_metadata,
                      skip_language=skip_language, skip_genres=True, guard=True,
                      caption_max_tokens=caption_max_tokens)
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
    result = run_phase(lm, phase="understand", prompt=prompt, uncond_prompt=None, sampling=sampling, fsm=fsm,
                       max_new_tokens=max_new_tokens, generator=generator, progress=progress, cancel=cancel)
    return result.output_text, seed


def format_caption(lm: LanguageModel, caption: str, lyrics: str, user_metadata: dict[str, Any] | None = None,
                   temperature: float = 0.85, top_k: int | None = None, top_p: float | None = None,
                   repetition_penalty: float = 1.0, max_new_tokens: int = C.COT_MAX_NEW_TOKENS,
                   seed: int | None = None, caption_max_tokens: int = C.CAPTION_MAX_TOKENS,
                   progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None) -> LMText:
    """Rewrite caption + lyrics; given metas (bpm, duration, keyscale, timesignature, language) are kept."""
    caption = caption if caption and caption.strip() else C.DEFAULT_NEGATIVE_PROMPT
    lyrics = lyrics if lyrics and lyrics.strip() else "[Instrumental]"
    given: dict[str, Any] = {}
    for key, value in (user_metadata or {}).items():
        if value in (None, ""):
            continue
        if key in ("bpm", "duration"):
            if int(value) > 0:
                given[key] = int(value)
        elif key in ("keyscale", "timesignature", "language"):
            given[key] = value
    prompt = lm.chat(C.FORMAT_INSTRUCTION, f"# Caption\n{caption}\n\n# Lyric\n{lyrics}")
    text, seed = _run_understand_phase(
        lm, prompt, user_metadata=given or None, skip_language="language" in given, temperature=temperature,
        top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed,
        caption_max_tokens=caption_max_tokens, progress=progress, cancel=cancel)
    metadata, _ = parse_output(text)
    return LMText(metadata, extract_after_think(text) or lyrics, text, seed)


def simple_mode(lm: LanguageModel, idea: str, instrumental: bool = False, vocal_language: str | None = None,
                temperature: float = 0.85, top_k: int | None = None, top_p: float | None = None,
                repetition_penalty: float = 1.0, max_new_tokens: int = C.COT_MAX_NEW_TOKENS,
                seed: int | None = None, caption_max_tokens: int = C.CAPTION_MAX_TOKENS,
                progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None) -> LMText:
    """A one-line idea -> caption, metas and lyrics ("[Instrumental]" when instrumental and none written)."""
    idea = idea if idea and idea.strip() else C.DEFAULT_NEGATIVE_PROMPT
    prompt = lm.chat(C.INSPIRE_INSTRUCTION, f"{idea}\n\ninstrumental: {'true' if instrumental else 'false'}")
    language = (vocal_language or "").strip()
    given = {"language": language} if language and language.lower() != "unknown" else None
    text, seed = _run_understand_phase(
        lm, prompt, user_metadata=given, skip_language=False, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed,
        caption_max_tokens=caption_max_tokens, progress=progress, cancel=cancel)
    metadata, _ = parse_output(text)
    lyrics = extract_after_think(text) or ("[Instrumental]" if instrumental else "")
    return LMText(metadata, lyrics, text, seed, {"instrumental": instrumental})


def understand_codes(lm: LanguageModel, codes: str | list[int], temperature: float = 0.3,
                     top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
                     max_new_tokens: int = C.COT_MAX_NEW_TOKENS, seed: int | None = None,
                     caption_max_tokens: int = C.CAPTION_MAX_TOKENS, progress: ProgressFn | None = None,
                     cancel: Callable[[], bool] | None = None) -> LMText:
    """5 Hz audio codes (a `<|audio_code_N|>` string or ints) -> caption, metas and lyrics."""
    if isinstance(codes, (list, tuple)):
        codes = "".join(f"<|audio_code_{int(c)}|>" for c in codes)
    if not codes or not codes.strip():
        raise ValueError("understand_codes needs at least one audio code")
    prompt = lm.chat(C.UNDERSTAND_INSTRUCTION, codes)
    text, seed = _run_understand_phase(
        lm, prompt, user_metadata=None, skip_language=False, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed,
        caption_max_tokens=caption_max_tokens, progress=progress, cancel=cancel)
    metadata, _ = parse_output(text)
    return LMText(metadata, extract_after_think(text), text, seed)
