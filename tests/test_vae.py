"""VAE wrapper: shapes, and tiled == untiled within tolerance (small tiles so the test is quick)."""

from __future__ import annotations

import pytest
import torch

from engine.models.vae import HOP, VAE
from tests.parity_utils import CHECKPOINTS


@pytest.fixture(scope="module")
def vae():
    return VAE.from_folder(CHECKPOINTS / "vae")


def _rel(a, b):
    return float((a - b).abs().max() / b.pow(2).mean().sqrt())


def test_decode_tiled_matches_untiled(vae):
    torch.manual_seed(0)
    latents = torch.randn(1, 60, 64)
    whole = vae.decode(latents, tiled=False)
    assert whole.shape == (1, 2, 60 * HOP) and whole.dtype == torch.float32
    vae.decode_chunk_frames, vae.decode_overlap_frames = 30, 8
    try:
        tiled = vae.decode(latents)
    finally:
        vae.decode_chunk_frames, vae.decode_overlap_frames = 256, 64
    assert tiled.shape == whole.shape
    assert _rel(tiled, whole) < 1e-4


def test_encode_tiled_matches_untiled(vae):
    wave = 0.5 * torch.sin(torch.linspace(0, 900, int(1.3 * 48000))).repeat(1, 2, 1)
    whole = vae.encode(wave, tiled=False)
    assert whole.shape == (1, int(1.3 * 48000) // HOP, 64)
    vae.encode_chunk_s, vae.encode_overlap_s = 0.8, 0.2
    try:
        tiled = vae.encode(wave)
    finally:
        vae.encode_chunk_s, vae.encode_overlap_s = 15.0, 2.0
    assert tiled.shape == whole.shape
    # 0.2 s of context is shorter than the encoder's receptive field, so tiles differ slightly;
    # a frame misalignment would give errors of order 1. (Default 2 s overlap: < 1e-5.)
    assert _rel(tiled, whole) < 2e-2


class _LocalAutoencoder:
    """Stand-in with a strictly local encoder/decoder, so tiling must be exact."""

    class _Dist:
        def __init__(self, mean):
            self.mean = mean

    class _Out:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    def encode(self, wave):
        frames = wave.shape[-1] // HOP
        pooled = wave[..., :frames * HOP].reshape(wave.shape[0], 2, frames, HOP).mean(-1)
        return self._Out(latent_dist=self._Dist(pooled.repeat(1, 32, 1)))

    def decode(self, latents):
        return self._Out(sample=latents[:, :2].repeat_interleave(HOP, dim=-1))


def test_tiling_bookkeeping_is_exact_for_a_local_model():
    vae = VAE(_LocalAutoencoder(), "cpu", torch.float32)
    vae.encode_chunk_s, vae.encode_overlap_s = 0.8, 0.2
    vae.decode_chunk_frames, vae.decode_overlap_frames = 20, 4
    wave = torch.randn(2, 2, 48000 * 3 + 777)
    assert torch.equal(vae.encode(wave), vae.encode(wave, tiled=False))
    latents = torch.randn(2, 97, 64)
    assert torch.equal(vae.decode(latents), vae.decode(latents, tiled=False))


def test_weight_norm_is_folded_at_load_without_changing_the_output(vae):
    from engine.checkpoints import load_vae
    from engine.models.vae import fold_weight_norm

    normed = load_vae(CHECKPOINTS / "vae").eval().requires_grad_(False)
    assert any(name.endswith("weight_g") for name, _ in normed.named_parameters())
    assert not any(name.endswith(("weight_g", "weight_v")) for name, _ in vae.model.named_parameters())
    latents = torch.randn(1, 12, 64)
    with torch.no_grad():
        expected = normed.decode(latents.transpose(1, 2)).sample
        params_before = sum(p.numel() for p in normed.parameters())
        assert fold_weight_norm(normed) > 0
        assert torch.equal(normed.decode(latents.transpose(1, 2)).sample, expected)
    assert sum(p.numel() for p in normed.parameters()) < params_before
    assert torch.equal(vae.decode(latents, tiled=False), expected.float())
