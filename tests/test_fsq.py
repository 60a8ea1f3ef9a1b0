"""FSQ index maths: basis, round trips, rounding boundaries and the soft clamp."""

from __future__ import annotations

import torch

from engine.models import fsq

LEVELS = fsq.DEFAULT_LEVELS


def test_basis_and_codebook_size():
    assert fsq.index_basis(LEVELS) == [1, 8, 64, 512, 2560, 12800]
    assert fsq.codebook_size(LEVELS) == 64000


def test_every_index_round_trips_through_levels():
    indices = torch.arange(64000)
    levels = fsq.levels_from_indices(indices, LEVELS)
    assert levels.shape == (64000, 6)
    assert int(levels.min()) == 0 and levels.max(dim=0).values.tolist() == [7, 7, 7, 4, 4, 4]
    assert torch.equal(fsq.indices_from_levels(levels, LEVELS), indices)
    assert fsq.levels_from_indices(torch.tensor([1, 8, 12800, 63999]), LEVELS).tolist() == [
        [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [7, 7, 7, 4, 4, 4]]


def test_code_values_are_symmetric_grids():
    k8 = torch.arange(8).unsqueeze(-1).expand(8, 6)
    values = fsq.level_values(k8.clamp(max=4), LEVELS)
    assert torch.allclose(values[:, 3], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]))
    values8 = fsq.level_values(k8, LEVELS)[:, 0]
    assert torch.allclose(values8, torch.tensor([-1 + 2 * i / 7 for i in range(8)]))


def test_rounding_boundaries_and_saturation():
    # For L = 5 the grid is -1, -0.5, 0, 0.5, 1: boundaries at -0.75, -0.25, 0.25, 0.75 (round half up).
    z = torch.tensor([[-5.0, -0.76, -0.74, -0.25, 0.2499, 0.25, 0.76, 5.0]]).T.expand(8, 6)
    k = fsq.level_indices(z, LEVELS)[:, 3]
    assert k.tolist() == [0, 0, 1, 2, 2, 3, 4, 4]


def test_soft_clamp_bounds_and_quantize_returns_grid_points():
    z = torch.linspace(-50, 50, 101).unsqueeze(-1).expand(101, 6)
    clamped = fsq.soft_clamp(z, LEVELS)
    assert float(clamped[:, 0].abs().max()) <= 8 / 7 + 1e-6 and float(clamped[:, 3].abs().max()) <= 1.25 + 1e-6
    values, indices = fsq.quantize(torch.randn(50, 6) * 2, LEVELS)
    recovered = fsq.level_values(fsq.levels_from_indices(indices, LEVELS), LEVELS)
    assert torch.equal(values, recovered)
    assert int(indices.min()) >= 0 and int(indices.max()) < 64000
