"""Tiled VAE encode of real source audio agrees with a single call when the overlap covers the
encoder's receptive field (tests/test_vae.py covers the tiling bookkeeping and decode)."""

import pytest
import torch

from engine.audio_io import load_audio
from tests.conftest import PARITY


@pytest.fixture(scope="module")
def vae():
    from engine.models.vae import VAE

    return VAE.from_folder(PARITY / "checkpoints" / "vae", device="cpu", dtype=torch.float32)


def _rel(a, b):
    return ((a - b).abs().max() / b.pow(2).mean().sqrt()).item()


def test_tiled_encode_matches_untiled(vae):
    wave = load_audio(PARITY / "cases" / "audio" / "source.wav")[None, :, :2 * 48000]
    whole = vae.encode(wave, tiled=False)
    vae_small = type(vae)(vae.model, "cpu", torch.float32)
    # 0.8 s kept per window -> 3 windows; the middle one has 0.4 s of context on both sides
    vae_small.encode_chunk_s, vae_small.encode_overlap_s = 1.6, 0.4
    tiled = vae_small.encode(wave, tiled=True)
    assert tiled.shape == whole.shape == (1, 50, 64)
    assert _rel(tiled, whole) < 1e-4

