"""The constrained-decoding state machine of the 5 Hz LM (upstream `MetadataConstrainedLogitsProcessor` semantics).

One `MetadataFSM` drives one generation. Per step the decoder calls `process(input_ids, scores)`
(masks a 1-D score vector in place and returns it) and, after sampling, `update(token_id)`.

Behaviour follows upstream exactly unless `guard=True`, which adds safety rails that only
matter for a model that writes malformed chains of thought (random weights): EOS is blocked
inside the caption, the caption ends at `caption_max_tokens`, and after the caption only
tokens that spell a following field name (`duration:` ...) are allowed. With greedy decoding on a
model that writes well-formed CoT, guard on and off give the same tokens.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch

from engine.lm import constants as C
from engine.lm.tables import FSMTables, Tree


class State(Enum):
    THINK_TAG = "THINK_TAG"
    NEWLINE_AFTER_THINK = "NEWLINE_AFTER_THINK"
    BPM_NAME = "BPM_NAME"
    BPM_VALUE = "BPM_VALUE"
    CAPTION_NAME = "CAPTION_NAME"
    CAPTION_VALUE = "CAPTION_VALUE"
    DURATION_NAME = "DURATION_NAME"
    DURATION_VALUE = "DURATION_VALUE"
    GENRES_NAME = "GENRES_NAME"
    GENRES_VALUE = "GENRES_VALUE"
    KEYSCALE_NAME = "KEYSCALE_NAME"
    KEYSCALE_VALUE = "KEYSCALE_VALUE"
    LANGUAGE_NAME = "LANGUAGE_NAME"
    LANGUAGE_VALUE = "LANGUAGE_VALUE"
    TIMESIG_NAME = "TIMESIG_NAME"
    TIMESIG_VALUE = "TIMESIG_VALUE"
    THINK_END_TAG = "THINK_END_TAG"
    CODES_GENERATION = "CODES_GENERATION"
    COMPLETED = "COMPLETED"


FIXED_STRINGS = {
    State.THINK_TAG: "<think>",
    State.NEWLINE_AFTER_THINK: "\n",
    State.BPM_NAME: "bpm:",
    State.CAPTION_NAME: "caption:",
    State.DURATION_NAME: "duration:",
    State.GENRES_NAME: "genres:",
    State.KEYSCALE_NAME: "keyscale:",
    State.LANGUAGE_NAME: "language:",
    State.TIMESIG_NAME: "timesignature:",
    State.THINK_END_TAG: "</think>",
}
NAME_STATE = {
    "bpm": State.BPM_NAME, "caption": State.CAPTION_NAME, "duration": State.DURATION_NAME,
    "genres": State.GENRES_NAME, "keyscale": State.KEYSCALE_NAME, "language": State.LANGUAGE_NAME,
    "timesignature": State.TIMESIG_NAME,
}
VALUE_STATE = {
    "bpm": State.BPM_VALUE, "caption": State.CAPTION_VALUE, "duration": State.DURATION_VALUE,
    "genres": State.GENRES_VALUE, "keyscale": State.KEYSCALE_VALUE, "language": State.LANGUAGE_VALUE,
    "timesignature": State.TIMESIG_VALUE,
}
FIELD_OF_VALUE_STATE = {state: field for field, state in VALUE_STATE.items()}
# Field names the model may write itself after the caption (upstream's caption-ending jump table).
CAPTION_JUMP_FIELDS = ("duration", "genres", "keyscale", "language", "timesignature")
PHASES = ("cot", "codes", "understand")

NEG_INF = float("-inf")


class MetadataFSM:
    def __init__(
        self,
        tables: FSMTables,
        phase: str = "cot",
        stop_at_reasoning: bool = False,
        user_metadata: dict[str, Any] | None = None,
        skip_caption: bool = False,
        skip_language: bool = False,
        skip_genres: bool = True,
        target_duration: float | None = None,
        trees: dict[str, Tree] | None = None,
        guard: bool = False,
        caption_max_tokens: int = C.CAPTION_MAX_TOKENS,
    ):
        if phase not in PHASES:
            raise ValueError(f"unknown generation phase {phase!r}; expected one of {PHASES}")
        self.t = tables
        self.phase = phase
        self.stop_at_reasoning = stop_at_reasoning
        self.user = {k: v for k, v in (user_metadata or {}).items() if v is not None}
        self.skip = {"caption": skip_caption, "language": skip_language, "genres": skip_genres}
        self.target_duration = target_duration
        has_target = bool(target_duration and target_duration > 0)
        self.target_codes = int(target_duration * C.CODES_PER_SECOND) if has_target else None
        trees = trees or {}
        self.trees: dict[str, Tree] = {
            "bpm": trees.get("bpm", tables.bpm_tree),
            "duration": trees.get("duration", tables.duration_tree),
            "timesignature": trees.get("timesignature", tables.timesig_tree),
            "keyscale": trees.get("keyscale", tables.keyscale_tree),
            "language": trees.get("language", tables.language_tree),
        }
        self.guard = guard
        self.caption_max_tokens = caption_max_tokens

        self.state = State.THINK_TAG
        self.position = 0
        self.accumulated_value = ""
        self.accumulated_ids: list[int] = []
        self.codes_count = 0
        self.queue: list[int] = []
        self.queue_field: str | None = None
        self.caption_after_newline = False
        self.caption_ending = False
        self.caption_token_count = 0
        self.pending_field_name = ""

    # ------------------------------------------------------------ transitions
    def next_field_state(self, field: str) -> State:
        index = C.FIELD_ORDER.index(field) if field in C.FIELD_ORDER else len(C.FIELD_ORDER)
        for name in C.FIELD_ORDER[index + 1:]:
            if self.skip.get(name, False):
                continue
            return NAME_STATE[name]
        return State.THINK_END_TAG

    def _next_state(self, state: State) -> State:
        if state is State.THINK_TAG:
            return State.NEWLINE_AFTER_THINK
        if state is State.NEWLINE_AFTER_THINK:
            return State.BPM_NAME
        if state is State.THINK_END_TAG:
            return State.COMPLETED if self.phase == "understand" else State.CODES_GENERATION
        if state is State.CODES_GENERATION:
            return State.COMPLETED
        for field, name_state in NAME_STATE.items():
            if state is name_state:
                return VALUE_STATE[field]
        if state in FIELD_OF_VALUE_STATE:
            return self.next_field_state(FIELD_OF_VALUE_STATE[state])
        return state

    def _enter(self, state: State) -> None:
        self.state = state
        self.position = 0
        self.accumulated_value = ""
        self.accumulated_ids = []
        self.caption_after_newline = False
        self.caption_token_count = 0
        self.caption_ending = False
        self.pending_field_name = ""

    def _advance(self) -> None:
        self._enter(self._next_state(self.state))

    # --------------------------------------------------------------- masking
    @staticmethod
    def _only(scores: torch.Tensor, allowed) -> torch.Tensor:
        allowed = list(allowed)
        if not allowed:
            scores.fill_(NEG_INF)
            return scores
        index = torch.tensor(allowed, dtype=torch.long, device=scores.device)
        kept = scores[index].clone()
        scores.fill_(NEG_INF)
        scores[index] = kept
        return scores

    def _mask_audio_codes(self, scores: torch.Tensor) -> None:
        scores[self.t.on("audio_code_ids", scores.device)] = NEG_INF

    def _contains_think_end(self, input_ids) -> bool:
        seq = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
        tag = self.t.think_end_tokens
        n = len(tag)
        return n > 0 and any(seq[i:i + n] == tag for i in range(len(seq) - n + 1))

    def process(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        """Mask a 1-D score vector for the next token (in place; the result is returned)."""
        if self.state is State.COMPLETED:
            if self.phase == "understand":
                # Free text after </think>; no audio codes (guard: not even the never-valid ones).
                scores[self.t.on("all_code_ids" if self.guard else "audio_code_ids", scores.device)] = NEG_INF
            return scores
        if self.phase == "codes" and self.state is State.THINK_TAG and self._contains_think_end(input_ids):
            self.state = State.CODES_GENERATION
            self.codes_count = 0
        if self.state is State.CODES_GENERATION:
            scores.masked_fill_(~self.t.on("codes_phase_allowed", scores.device), NEG_INF)
            eos = self.t.eos_token_id
            if self.target_codes is not None and eos is not None:
                if self.codes_count < self.target_codes:
                    scores[eos] = NEG_INF
                else:
                    self._only(scores, [eos])
            return scores
        return self._process_fields(input_ids, scores)

    def _start_injection(self, field: str, scores: torch.Tensor) -> bool:
        """Queue `" {value}\\n"` for a user-given field and force its first token."""
        if field not in self.user or self.queue:
            return False
        if field == "caption" or field == "genres":
            if self.accumulated_value:
                return False
        elif self.accumulated_ids:
            return False
        tokens = self.t.encode(f" {self.user[field]}\n")
        if not tokens:
            return False
        self.queue = tokens
        self.queue_field = field
        self._only(scores, [tokens[0]])
        return True

    def _tree_step(self, field: str, scores: torch.Tensor, complete_means_newline: bool) -> torch.Tensor:
        tree = self.trees[field]
        newline = self.t.newline_token
        allowed_here = tree.get(tuple(self.accumulated_ids))
        if complete_means_newline:
            if allowed_here is not None and newline in allowed_here:
                return self._only(scores, [newline])
            allowed = sorted(allowed_here or ())
            if not allowed and (self.guard or field != "timesignature"):
                allowed = [newline]
            return self._only(scores, allowed)
        allowed = sorted(allowed_here or ())
        if not allowed and self.guard:
            allowed = [newline]
        return self._only(scores, allowed)

    def _process_fields(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        if self.queue:
            return self._only(scores, [self.queue[0]])
        state = self.state
        if state in FIXED_STRINGS:
            text = FIXED_STRINGS[state]
            allowed = self.t.fixed_string_tokens(text[self.position:])
            stopping = state is State.THINK_END_TAG and self.stop_at_reasoning
            if allowed:
                # Phase 1 never writes </think>: EOS replaces the tag's last <= 10 characters.
                if stopping and len(text) - self.position <= 10 and self.t.eos_token_id is not None:
                    return self._only(scores, [self.t.eos_token_id])
                return self._only(scores, allowed)
            if stopping and self.t.eos_token_id is not None:
                return self._only(scores, [self.t.eos_token_id])
            self._advance()
            if self.state in FIXED_STRINGS:
                return scores
            scores.zero_()
            return self._process_fields(input_ids, scores)

        if state is State.BPM_VALUE:
            if self._start_injection("bpm", scores):
                return scores
            return self._tree_step("bpm", scores, complete_means_newline=False)
        if state is State.CAPTION_VALUE:
            return self._caption_step(scores)
        if state is State.DURATION_VALUE:
            if self._start_injection("duration", scores):
                return scores
            if self.target_duration is not None:
                target = str(int(self.target_duration))
                if len(self.accumulated_value) < len(target):
                    return self._only(scores, [self.t.digit_tokens[int(target[len(self.accumulated_value)])]])
                return self._only(scores, [self.t.newline_token])
            return self._tree_step("duration", scores, complete_means_newline=False)
        if state is State.GENRES_VALUE:
            if self._start_injection("genres", scores):
                return scores
            # No genres vocabulary: free text; a newline ends the field (see update()).
            if not self.accumulated_value.strip() and self.t.newline_token is not None:
                scores[self.t.newline_token] = NEG_INF
            return scores
        if state is State.KEYSCALE_VALUE:
            if self._start_injection("keyscale", scores):
                return scores
            return self._tree_step("keyscale", scores, complete_means_newline=True)
        if state is State.LANGUAGE_VALUE:
            if self._start_injection("language", scores):
                return scores
            if not self.accumulated_ids:
                # The first token is the top-1 among the first tokens of all languages.
                candidates = sorted(self.trees["language"].get((), ()))
                if not candidates:
                    return self._only(scores, [self.t.newline_token])
                index = torch.tensor(candidates, dtype=torch.long, device=scores.device)
                best = candidates[int(torch.argmax(scores[index]).item())]
                return self._only(scores, [best])
            return self._tree_step("language", scores, complete_means_newline=True)
        if state is State.TIMESIG_VALUE:
            if self._start_injection("timesignature", scores):
                return scores
            return self._tree_step("timesignature", scores, complete_means_newline=True)
        return scores

    def _caption_step(self, scores: torch.Tensor) -> torch.Tensor:
        if self._start_injection("caption", scores):
            return scores
        if self.caption_after_newline:
            self.caption_after_newline = False
            top_text = self.t.token_texts[int(torch.argmax(scores).item())]
            over_budget = self.guard and self.caption_token_count >= self.caption_max_tokens
            if over_budget or (top_text and top_text[0] not in " \t"):
                # The model starts the next field name itself: no constraint until a ':' token.
                self.caption_ending = True
                self.pending_field_name = ""
                if self.guard:
                    return self._only(scores, self._field_name_tokens())
                return scores
        if self.caption_ending:
            if self.guard:
                return self._only(scores, self._field_name_tokens())
            return scores
        if self.t.backtick_token is not None:
            scores[self.t.backtick_token] = NEG_INF
        self._mask_audio_codes(scores)
        if self.guard:
            scores[self.t.on("added_token_ids", scores.device)] = NEG_INF
        if self.caption_token_count >= self.caption_max_tokens and self.t.newline_token is not None:
            return self._only(scores, [self.t.newline_token])
        return scores

    def _field_name_tokens(self) -> list[int]:
        """Guard mode: tokens that keep `pending_field_name` on the way to the next field's 'name:'."""
        target = FIXED_STRINGS[self.next_field_state("caption")]
        if self.next_field_state("caption") is State.THINK_END_TAG or not target.startswith(self.pending_field_name):
            return [self.t.newline_token]
        return sorted(set(self.t.ids_with_text_prefix_of(target[len(self.pending_field_name):]))) \
            or [self.t.newline_token]

    # ---------------------------------------------------------------- update
    def update(self, token_id: int) -> None:
        """Advance the state after `token_id` was chosen."""
        if self.state is State.COMPLETED:
            return
        if self.state is State.CODES_GENERATION:
            self.codes_count += 1
            return
        if self.queue:
            self.queue.pop(0)
            if not self.queue:
                field, self.queue_field = self.queue_field, None
                self.state = self.next_field_state(field)
                self.position = 0
                self.accumulated_value = ""
                self.accumulated_ids = []
            return
        text = self.t.token_texts[token_id]
        state = self.state
        if state in FIXED_STRINGS:
            self.position += len(text)
            if self.position >= len(FIXED_STRINGS[state]):
                if state is State.THINK_END_TAG and self.stop_at_reasoning:
                    self.state = State.COMPLETED
                    self.position = 0
                    self.accumulated_value = ""
                    self.accumulated_ids = []
                else:
                    self._advance()
        elif state in (State.BPM_VALUE, State.DURATION_VALUE, State.TIMESIG_VALUE):
            if token_id == self.t.newline_token:
                self._advance()
            else:
                self.accumulated_ids.append(token_id)
                if text.strip().isdigit():
                    self.accumulated_value += text.strip()
        elif state is State.GENRES_VALUE:
            if token_id == self.t.newline_token:
                self._advance()
            else:
                self.accumulated_value += text
        elif state is State.CAPTION_VALUE:
            self._caption_update(text)
        elif state in (State.KEYSCALE_VALUE, State.LANGUAGE_VALUE):
            if token_id == self.t.newline_token:
                self._advance()
            else:
                self.accumulated_ids.append(token_id)
                self.accumulated_value += text

    def _caption_update(self, text: str) -> None:
        self.caption_token_count += 1
        self.accumulated_value += text
        self.caption_after_newline = "\n" in text
        if not self.caption_ending:
            return
        self.pending_field_name += text
        if ":" not in text:
            return
        name = self.pending_field_name.strip().rstrip(":").strip().lower()
        if name in CAPTION_JUMP_FIELDS:
            self.state = VALUE_STATE[name]
            self.position = 0
            self.accumulated_value = ""
            self.accumulated_ids = []
            self.caption_ending = False
            self.pending_field_name = ""
        else:
            self.caption_ending = False
            self.pending_field_name = ""
            self._advance()

    # --------------------------------------------------------------- tracing
    def snapshot(self) -> dict[str, Any]:
        """The fields of the parity trace that describe the state before a call to `process`."""
        snap: dict[str, Any] = {"state": self.state.value}
        if self.queue:
            snap["queue"] = list(self.queue)
        if self.accumulated_ids:
            snap["accumulated_token_ids"] = list(self.accumulated_ids)
        if self.caption_after_newline:
            snap["caption_after_newline"] = True
        if self.caption_ending:
            snap["caption_ending"] = True
        return snap
