"""Everything the constrained-decoding FSM precomputes from a tokenizer.

All lookups are built from the tokenizer itself (never from known ids), so the same code
serves the published LM, the parity checkpoint and our tiny test checkpoints.
Prefix trees map a tuple of already generated value token ids to the set of ids allowed
next; a complete value has the newline id in its set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from engine.lm import constants as C

Tree = dict[tuple[int, ...], set[int]]

_AUDIO_CODE_RE = re.compile(r"^<\|audio_code_(\d+)\|>$")


class FSMTables:
    """Token ids, per-token texts, value prefix trees and fixed-string walks for one tokenizer."""

    def __init__(self, tokenizer, duration_max: int = C.DEFAULT_DURATION_MAX, vocab_size: int | None = None):
        self.tokenizer = tokenizer
        # The published LM's vocab is exactly len(tokenizer); a model with extra (padding) rows gets
        # empty texts for them, and guard mode keeps them out of the caption.
        n_tokens = len(tokenizer)
        self.vocab_size = max(n_tokens, vocab_size or 0)
        self.duration_max = int(duration_max)
        self._fixed_string_memo: dict[str, tuple[int, ...]] = {}
        # decode([id]) of every id: the FSM reasons about token *texts* (newlines, colons, spaces).
        self.token_texts: list[str] = [tokenizer.decode([i]) for i in range(n_tokens)]
        self.token_texts += [""] * (self.vocab_size - n_tokens)
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.digit_tokens = {d: self._last(str(d)) for d in range(10)}
        self.newline_token = self._last("\n")
        self.space_token = self._last(" ")
        self.backtick_token = self._last("`")
        self.period_token = self._last(".")
        self.think_end_tokens = self.encode("</think>")

        codes = []
        self.code_value_of_token: dict[int, int] = {}
        for token_id, text in enumerate(self.token_texts):
            match = _AUDIO_CODE_RE.match(text)
            if match:
                value = int(match.group(1))
                self.code_value_of_token[token_id] = value
                if value <= C.MAX_AUDIO_CODE:
                    codes.append(token_id)
        self.audio_code_ids = torch.tensor(sorted(codes), dtype=torch.long)
        self.token_of_code_value = {v: t for t, v in self.code_value_of_token.items()}
        self.all_code_ids = torch.tensor(sorted(self.code_value_of_token), dtype=torch.long)
        # Every added token (control tags, <think>, </think>, audio codes): guard mode keeps them
        # out of the caption so a malformed caption cannot break the CoT layout.
        added = set(tokenizer.get_added_vocab().values()) | set(self.code_value_of_token)
        added |= set(range(n_tokens, self.vocab_size))
        self.added_token_ids = torch.tensor(sorted(added), dtype=torch.long)
        # Phase 2 allows the valid codes and EOS.
        valid = torch.zeros(self.vocab_size, dtype=torch.bool)
        valid[self.audio_code_ids] = True
        if self.eos_token_id is not None:
            valid[self.eos_token_id] = True
        self.codes_phase_allowed = valid
        self.codes_phase_indices = valid.nonzero(as_tuple=False).squeeze(1)
        self._text_index: dict[str, list[int]] | None = None
        self._device_cache: dict[tuple[str, str], torch.Tensor] = {}

        self.bpm_tree = self.numeric_tree("bpm", range(C.BPM_MIN, C.BPM_MAX + 1))
        self.duration_tree = self.numeric_tree("duration", range(C.DURATION_MIN, self.duration_max + 1))
        self.timesig_tree = self.numeric_tree("timesignature", C.VALID_TIME_SIGNATURES)
        self.keyscale_tree = self.keyscale_tree_for(C.VALID_KEYSCALES)
        self.language_tree = self.value_tree("language", C.VALID_LANGUAGES)

    def on(self, name: str, device) -> torch.Tensor:
        """Tensor attribute `name` on `device` (copied once per device, then reused every step)."""
        key = (name, str(device))
        cached = self._device_cache.get(key)
        if cached is None:
            cached = getattr(self, name).to(device)
            self._device_cache[key] = cached
        return cached

    # ------------------------------------------------------------------ basics
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _last(self, text: str) -> int | None:
        ids = self.encode(text)
        return ids[-1] if ids else None

    def _value_tokens(self, field: str, value: str) -> list[int] | None:
        """Tokens of `value` as they follow `field:` ("field: value" encoded, minus `field:`)."""
        context = self.encode(f"{field}:")
        full = self.encode(f"{field}: {value}")
        if full[:len(context)] != context:
            return None
        return full[len(context):]

    def _add_to_tree(self, tree: Tree, value_tokens: list[int]) -> None:
        for i in range(len(value_tokens) + 1):
            allowed = tree.setdefault(tuple(value_tokens[:i]), set())
            if i < len(value_tokens):
                allowed.add(value_tokens[i])
            elif self.newline_token is not None:
                allowed.add(self.newline_token)

    # ------------------------------------------------------------- value trees
    def value_tree(self, field: str, values: Iterable) -> Tree:
        tree: Tree = {}
        for value in values:
            tokens = self._value_tokens(field, str(value))
            if tokens:
                self._add_to_tree(tree, tokens)
        return tree

    def numeric_tree(self, field: str, values: Iterable) -> Tree:
        return self.value_tree(field, values)

    def keyscale_tree_for(self, keyscales: Iterable[str]) -> Tree:
        tree: Tree = {}
        for keyscale in keyscales:
            tokens = self._value_tokens("keyscale", keyscale)
            if not tokens:
                continue
            first = self.token_texts[tokens[0]].lstrip()
            # Upstream skips values whose first token does not start with a note letter
            # (a bare-space first token passes: its stripped text is empty).
            if first and first[0].upper() not in "ABCDEFG":
                continue
            self._add_to_tree(tree, tokens)
        return tree

    # ------------------------------------------------------ fixed-string walk
    def fixed_string_tokens(self, remaining: str) -> tuple[int, ...]:
        """Tokens allowed to continue a forced string: the longest prefix that encodes to one token.

        Falls back to every first token that matches the start of `remaining` when no
        prefix is a single token (never happens for the field names in practice). Answers are
        kept per table: the same few field names are walked at every decoding step.
        """
        if remaining not in self._fixed_string_memo:
            self._fixed_string_memo[remaining] = self._walk_fixed_string(remaining)
        return self._fixed_string_memo[remaining]

    def _walk_fixed_string(self, remaining: str) -> tuple[int, ...]:
        if not remaining:
            return ()
        for end in range(len(remaining), 0, -1):
            ids = self.encode(remaining[:end])
            if len(ids) == 1:
                return (ids[0],)
        best: dict[int, int] = {}
        for end in range(1, min(len(remaining) + 1, 20)):
            prefix = remaining[:end]
            ids = self.encode(prefix)
            if not ids:
                continue
            text = self.token_texts[ids[0]].lstrip().lower()
            want = prefix.lstrip().lower()
            if text.startswith(want) or want.startswith(text):
                if ids[0] not in best or end > best[ids[0]]:
                    best[ids[0]] = end
        return tuple(t for t, _ in sorted(best.items(), key=lambda item: item[1], reverse=True))

    def fixed_string_walk(self, text: str) -> list[int]:
        """The whole token sequence the FSM forces for `text` (position advances by decoded length)."""
        out, pos = [], 0
        while pos < len(text):
            allowed = self.fixed_string_tokens(text[pos:])
            if not allowed:
                break
            out.append(allowed[0])
            pos += len(self.token_texts[allowed[0]])
        return out

    # ------------------------------------------------ text -> ids (guard mode)
    def ids_with_text_prefix_of(self, remaining: str) -> list[int]:
        """Non-special tokens whose text is a non-empty prefix of `remaining`."""
        if self._text_index is None:
            index: dict[str, list[int]] = {}
            for token_id, text in enumerate(self.token_texts):
                if text and token_id not in self.code_value_of_token and len(text) <= 24:
                    index.setdefault(text, []).append(token_id)
            self._text_index = index
        out: list[int] = []
        for end in range(1, len(remaining) + 1):
            out.extend(self._text_index.get(remaining[:end], ()))
        return out

    # ------------------------------------------------------------- reporting
    def as_dict(self) -> dict:
        """The tables in the layout of the parity fixture's fsm_tables.json (for diffing)."""
        def tree_rows(tree: Tree) -> list[dict]:
            return [{"prefix": list(k), "allowed": sorted(v)} for k, v in tree.items()]

        return {
            "vocab_size": self.vocab_size,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "newline_token": self.newline_token,
            "backtick_token": self.backtick_token,
            "period_token": self.period_token,
            "space_token": self.space_token,
            "digit_tokens": {str(d): t for d, t in self.digit_tokens.items()},
            "think_end_tag_tokens": self.think_end_tokens,
            "n_audio_code_tokens_valid": int(self.audio_code_ids.numel()),
            "duration_max": self.duration_max,
            "bpm_prefix_tree": tree_rows(self.bpm_tree),
            "duration_prefix_tree": tree_rows(self.duration_tree),
            "timesig_prefix_tree": tree_rows(self.timesig_tree),
            "keyscale_prefix_tree": tree_rows(self.keyscale_tree),
            "language_prefix_tree": tree_rows(self.language_tree),
        }
