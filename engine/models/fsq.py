"""Finite scalar quantisation (FSQ) as used by ACE-Step 1.5's audio tokenizer.

The tokenizer's quantizer is a one-stage residual FSQ: `project_in` (D -> 6), a soft clamp
`tanh(z / c) * c` with `c = 1 + 1 / (L - 1)` per dimension, symmetric rounding to `L` levels
on [-1, 1], then `project_out` (6 -> D). With one stage the residual machinery is the identity,
so only the per-dimension maths below is needed. Levels [8, 8, 8, 5, 5, 5] give 64,000 codes;
an index is `sum(k_d * basis_d)` with the first dimension varying fastest.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_LEVELS = (8, 8, 8, 5, 5, 5)


def index_basis(levels) -> list[int]:
    """[1, L0, L0*L1, ...]: the weight of each dimension's level index in a code index."""
    basis, acc = [], 1
    for level in levels:
        basis.append(acc)
        acc *= int(level)
    return basis


def codebook_size(levels) -> int:
    return math.prod(int(level) for level in levels)


def soft_clamp(z: torch.Tensor, levels) -> torch.Tensor:
    """`tanh(z / c) * c` with `c_d = 1 + 1 / (L_d - 1)` (slightly wider than [-1, 1])."""
    c = torch.tensor([1.0 + 1.0 / (int(level) - 1) for level in levels], dtype=z.dtype, device=z.device)
    return torch.tanh(z / c) * c


def level_indices(z: torch.Tensor, levels) -> torch.Tensor:
    """Per-dimension level index k_d in 0..L_d-1 (hard clamp to [-1, 1], round half up), int64."""
    span = torch.tensor([int(level) - 1 for level in levels], dtype=torch.float32, device=z.device)
    unit = (z.float().clamp(-1.0, 1.0) + 1.0) / 2.0
    return torch.floor(span * unit + 0.5).long()


def level_values(k: torch.Tensor, levels) -> torch.Tensor:
    """Code value of each level index: k * 2 / (L - 1) - 1, float32."""
    span = torch.tensor([int(level) - 1 for level in levels], dtype=torch.float32, device=k.device)
    return k.float() * 2.0 / span - 1.0


def indices_from_levels(k: torch.Tensor, levels) -> torch.Tensor:
    basis = torch.tensor(index_basis(levels), dtype=torch.long, device=k.device)
    return (k.long() * basis).sum(dim=-1)


def levels_from_indices(indices: torch.Tensor, levels) -> torch.Tensor:
    """Inverse of `indices_from_levels`: [...] -> [..., len(levels)] level indices."""
    basis = torch.tensor(index_basis(levels), dtype=torch.long, device=indices.device)
    sizes = torch.tensor([int(level) for level in levels], dtype=torch.long, device=indices.device)
    return (indices.long().unsqueeze(-1) // basis) % sizes


def quantize(z: torch.Tensor, levels) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft clamp, round. Returns (code values [..., d] float32, indices [...] int64)."""
    k = level_indices(soft_clamp(z.float(), levels), levels)
    return level_values(k, levels), indices_from_levels(k, levels)


class FSQQuantizer(nn.Module):
    """The `tokenizer.quantizer` module: parameters `project_in` / `project_out` only."""

    def __init__(self, dim: int, levels=DEFAULT_LEVELS):
        super().__init__()
        self.levels = tuple(int(level) for level in levels)
        self.project_in = nn.Linear(dim, len(self.levels))
        self.project_out = nn.Linear(len(self.levels), dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, N, dim] -> (quantized [B, N, dim], indices [B, N, 1])."""
        codes, indices = quantize(self.project_in(x), self.levels)
        return self.project_out(codes.to(x.dtype)), indices.unsqueeze(-1)

    def codes_to_output(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, N] or [B, N, 1] -> quantized [B, N, dim] (what the detokenizer consumes)."""
        if indices.dim() == 3:
            indices = indices[..., 0]
        codes = level_values(levels_from_indices(indices, self.levels), self.levels)
        return self.project_out(codes.to(self.project_out.weight.dtype))
