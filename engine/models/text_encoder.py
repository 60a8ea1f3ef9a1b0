"""Qwen3-Embedding-0.6B as ACE-Step uses it: caption -> hidden states, lyrics -> token embeddings.

Each prompt is tokenised on its own (the tokenizer's post-processor appends `<|endoftext|>`),
then the batch is right-padded with the pad id. Captions go through the whole model with no
attention mask (causal attention makes right padding harmless); lyrics only through the
embedding table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.checkpoints import load_text_encoder

CAPTION_MAX_TOKENS = 256
LYRIC_MAX_TOKENS = 2048


@dataclass
class TokenBatch:
    ids: torch.Tensor   # [B, L] int64
    mask: torch.Tensor  # [B, L] bool


class TextEncoder:
    """Caption encoder and lyric embedding table. (`--low-vram` parks it in CPU memory between stages:
    engine/vram.py.)"""

    def __init__(self, tokenizer, model, device, dtype):
        self.tokenizer = tokenizer
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype

    @classmethod
    def from_folder(cls, path, device="cpu", dtype=torch.float32) -> TextEncoder:
        """Tokenizer and Qwen3Model of the folder, loaded strictly (every key, every shape)."""
        tokenizer, model = load_text_encoder(path)
        model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(tokenizer, model, device, dtype)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    def tokenize(self, prompts: list[str], max_length: int) -> TokenBatch:
        """Tokenise each prompt separately (truncating to `max_length`), right-pad to the longest."""
        rows = [self.tokenizer(p, truncation=True, max_length=max_length)["input_ids"] for p in prompts]
        return pad_token_rows(rows, self.pad_id, self.device)

    @torch.no_grad()
    def encode_captions(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> last_hidden_state [B, L, hidden] (no attention mask, like upstream)."""
        return self.model(input_ids=ids.to(self.device)).last_hidden_state

    @torch.no_grad()
    def embed_lyrics(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> embedding-table lookup [B, L, hidden]."""
        return self.model.embed_tokens(ids.to(self.device))


def pad_token_rows(rows: list[list[int]], pad_id: int, device="cpu") -> TokenBatch:
    """Right-pad variable-length id lists into ids/mask tensors."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = True
    return TokenBatch(ids.to(device), mask.to(device))


def pad_or_truncate(batch: TokenBatch, length: int, pad_id: int) -> TokenBatch:
    """Make a token batch exactly `length` long (upstream's F.pad with a possibly negative pad)."""
    current = batch.ids.shape[1]
    if current >= length:
        return TokenBatch(batch.ids[:, :length], batch.mask[:, :length])
    extra = length - current
    ids = torch.nn.functional.pad(batch.ids, (0, extra), value=pad_id)
    mask = torch.nn.functional.pad(batch.mask, (0, extra), value=False)
    return TokenBatch(ids, mask)
