"""Tiled VAE encode/decode agrees with a single call (tiny VAE, short signal, small tiles)."""

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
    wave = load_audio(PARITY / "cases" / "audio" / "source.wav")[None, :, :4 * 48000]
    whole = vae.encode(wave, tiled=False)
    vae_small = type(vae)(vae.model, "cpu", torch.float32)
    vae_small.encode_chunk_s, vae_small.encode_overlap_s = 1.6, 0.4  # 0.8 s kept per window -> 5 windows
    tiled = vae_small.encode(wave, tiled=True)
    assert tiled.shape == whole.shape == (1, 100, 64)
    assert _rel(tiled, whole) < 1e-4


def test_tiled_decode_matches_untiled(vae):
    torch.manual_seed(0)
    latents = torch.randn(1, 150, 64)
    whole = vae.decode(latents, tiled=False)
    vae_small = type(vae)(vae.model, "cpu", torch.float32)
    vae_small.decode_chunk_frames, vae_small.decode_overlap_frames = 48, 12  # 24 frames kept per window
    tiled = vae_small.decode(latents, tiled=True)
    assert tiled.shape == whole.shape == (1, 2, 150 * 1920)
    assert _rel(tiled, whole) < 1e-4
