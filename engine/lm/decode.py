"""Token-by-token decoding with a KV cache: the constrained loop and the CFG loop.

Per step (upstream's order): logits of the last position -> CFG (phase 2: only over the valid
codes + EOS, in fp32) -> FSM mask -> repetition penalty over the cond row's ids -> top-k ->
top-p on the untempered logits -> softmax(logits / temperature) -> multinomial. The chosen token
is appended to every row (cond and uncond).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.lm.fsm import MetadataFSM, State
from engine.types import Cancelled

NEG_INF = float("-inf")


@dataclass
class Sampling:
    temperature: float = 0.85
    top_k: int | None = None          # None or 0 = off
    top_p: float | None = None        # None or >= 1 = off
    repetition_penalty: float = 1.0
    cfg_scale: float = 1.0


@dataclass
class DecodeRecord:
    """Optional per-step record (for parity tests and debugging)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    logits_step0: torch.Tensor | None = None       # [rows, V] raw logits of the prefill step
    top5_ids: list[torch.Tensor] = field(default_factory=list)
    top5_logits: list[torch.Tensor] = field(default_factory=list)
    chosen_raw_logits: list[torch.Tensor] = field(default_factory=list)
    final_margin: list[float] = field(default_factory=list)


def apply_repetition_penalty(ids: torch.Tensor, scores: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF-style penalty on every id seen so far: negative scores * penalty, positive / penalty."""
    if penalty == 1.0:
        return scores
    picked = scores.gather(0, ids)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(0, ids, picked)


def apply_top_k(scores: torch.Tensor, top_k: int | None) -> torch.Tensor:
    if top_k is not None and top_k > 0:
        k = min(int(top_k), scores.shape[-1])
        threshold = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < threshold, NEG_INF)
    return scores


def apply_top_p(scores: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Drop a token when the probability mass ranked before it already exceeds p (top token kept)."""
    if top_p is None or not 0.0 < top_p < 1.0:
        return scores
    sorted_scores, order = torch.sort(scores, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_scores.float(), dim=-1), dim=-1)
    remove_sorted = cumulative > top_p
    remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
    remove_sorted[..., 0] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return scores.masked_fill(remove, NEG_INF)


def sample_token(scores: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(torch.argmax(scores).item())
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    return int(torch.multinomial(probs, num_samples=1, generator=generator).item())


def choose_token(scores: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """top-k -> top-p -> temperature softmax -> multinomial, on the finite entries only.

    Masked (-inf) entries have probability 0 either way; working on the finite subset keeps
    phase 1 (a few thousand allowed ids) cheap. With top_k == 1 this is the argmax.
    """
    finite = torch.isfinite(scores).nonzero(as_tuple=False).squeeze(1)
    if finite.numel() == 0:
        raise RuntimeError("the constraints left no token to choose")
    if finite.numel() == 1:
        return int(finite[0].item())
    subset = scores[finite]
    if sampling.top_k == 1:
        return int(finite[int(torch.argmax(subset).item())].item())
    subset = apply_top_k(subset, sampling.top_k)
    subset = apply_top_p(subset, sampling.top_p)
    return int(finite[sample_token(subset, sampling.temperature, generator)].item())


def allowed_ranges(scores: torch.Tensor) -> list[list[int]]:
    """The ids with a finite score as sorted `[start, stop)` ranges."""
    ids = torch.isfinite(scores).nonzero(as_tuple=False).squeeze(1).cpu()
    if ids.numel() == 0:
        return []
    breaks = (ids[1:] != ids[:-1] + 1).nonzero(as_tuple=False).squeeze(1)
    starts = torch.cat([ids[:1], ids[breaks + 1]]).tolist()
    stops = torch.cat([ids[breaks] + 1, ids[-1:] + 1]).tolist()
    return [[a, b] for a, b in zip(starts, stops)]


def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    fsm: MetadataFSM | None,
    sampling: Sampling,
    max_new_tokens: int,
    stop_ids: tuple[int, ...],
    generator: torch.Generator | None = None,
    on_token: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    record: DecodeRecord | None = None,
) -> list[int]:
    """Generate up to `max_new_tokens` tokens; returns them (the stop token included).

    `input_ids`/`attention_mask` are [1, L] (single row) or [2, L] (cond, uncond; left-padded)
    when `sampling.cfg_scale > 1`. `on_token(step, token)` is called after every token.
    """
    use_cfg = input_ids.shape[0] == 2
    device = input_ids.device
    ids = input_ids.clone()
    mask = attention_mask.clone()
    past = None
    out_tokens: list[int] = []
    codes_index = fsm.t.on("codes_phase_indices", device) if fsm is not None else None
    with torch.inference_mode():
        for step in range(max_new_tokens):
            if cancel is not None and cancel():
                raise Cancelled("cancelled during LM decoding")
            if past is None:
                out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
            else:
                out = model(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=past,
                            use_cache=True, logits_to_keep=1)
            past = out.past_key_values
            raw = out.logits[:, -1, :].float()
            if use_cfg:
                cond, uncond = raw[0], raw[1]
                scale = sampling.cfg_scale
                if fsm is not None and fsm.state is State.CODES_GENERATION:
                    scores = torch.full_like(cond, NEG_INF)
                    scores[codes_index] = uncond[codes_index] + scale * (cond[codes_index] - uncond[codes_index])
                else:
                    scores = torch.nan_to_num(uncond + scale * (cond - uncond), nan=NEG_INF)
            else:
                scores = raw[0].clone()
            snapshot = fsm.snapshot() if (record is not None and fsm is not None) else None
            if fsm is not None:
                scores = fsm.process(ids[0], scores)
            allowed = allowed_ranges(scores) if record is not None else None
            scores = apply_repetition_penalty(ids[0], scores, sampling.repetition_penalty)
            if record is not None:
                finite = scores[torch.isfinite(scores)]
                top2 = torch.topk(finite, min(2, finite.numel()))[0] if finite.numel() else finite
                record.final_margin.append(float(top2[0] - top2[1]) if top2.numel() > 1 else float("inf"))
            token = choose_token(scores, sampling, generator)
            if fsm is not None:
                fsm.update(token)
            if record is not None:
                if step == 0:
                    record.logits_step0 = raw.detach().cpu().clone()
                top = torch.topk(raw, 5, dim=-1)
                record.top5_ids.append(top.indices.cpu())
                record.top5_logits.append(top.values.cpu())
                record.chosen_raw_logits.append(raw[:, token].cpu())
                entry = dict(snapshot or {})
                if fsm is not None and entry.get("state") != fsm.state.value:
                    entry["state_after"] = fsm.state.value
                entry["n_allowed"] = sum(b - a for a, b in allowed)
                entry["allowed"] = allowed
                entry["token"] = token
                record.steps.append(entry)
            out_tokens.append(token)
            next_col = torch.full((ids.shape[0], 1), token, dtype=ids.dtype, device=device)
            ids = torch.cat([ids, next_col], dim=1)
            mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1)
            if on_token is not None:
                on_token(step, token)
            if token in stop_ids:
                break
    return out_tokens
