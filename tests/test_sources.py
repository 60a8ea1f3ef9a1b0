"""Receptive fields, span encode/decode and the source cache, on Oobleck layers small enough to be fast.

The layers are diffusers' own Oobleck encoder and decoder with the real strides [2, 4, 4, 6, 10]
but 8 channels, so a reach computed from them must hold for the published VAE's layout too; the
decoder reach is also checked on the parity VAE itself.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from diffusers.models.autoencoders.autoencoder_oobleck import OobleckDecoder, OobleckEncoder

from engine.models.vae import VAE
from engine.sources import EncodeReport, SourceCache, hop_hashes, missing_spans
from engine.units import HOP_SAMPLES
from engine.vae_span import Reach, decode_span, decoder_reach, encode_span, encoder_reach, vae_reaches
from tests.conftest import PARITY

STRIDES = [2, 4, 4, 6, 10]


class SmallOobleck(torch.nn.Module):
    """AutoencoderOobleck's interface (`encode(...).latent_dist.mean`, `decode(...).sample`) on 8 channels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        with warnings.catch_warnings():  # diffusers builds Oobleck with the legacy weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            self.encoder = OobleckEncoder(8, 2, STRIDES, [1, 1, 1, 1, 1])
            self.decoder = OobleckDecoder(8, 4, 2, STRIDES[::-1], [1, 1, 1, 1, 1])

    def encode(self, wave):
        mean = self.encoder(wave)[:, :4]
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean))

    def decode(self, latents):
        return SimpleNamespace(sample=self.decoder(latents))


@pytest.fixture(scope="module")
def vae():
    with torch.no_grad():
        return VAE(SmallOobleck().eval().requires_grad_(False), "cpu", torch.float32)


def _wave(seconds, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, int(seconds * 48000), generator=generator)


def _close(a, b, tolerance=1e-5):
    return float((a - b).abs().max() / b.pow(2).mean().sqrt()) < tolerance


def test_reaches_are_computed_from_the_layers(vae):
    enc, dec = vae_reaches(vae)
    assert 5 <= enc.frames <= 9 and 8 <= dec.frames <= 11  # Oobleck's measured -6.3..+7.3 and about 9
    assert encoder_reach(vae.model.encoder) == enc and decoder_reach(vae.model.decoder) == dec


def test_encoder_reach_bounds_what_one_changed_hop_touches(vae):
    wave = _wave(2.0)
    base = vae.encode(wave[None], tiled=False)[0]
    changed = wave.clone()
    changed[:, 25 * HOP_SAMPLES:26 * HOP_SAMPLES] += 0.5
    diff = (vae.encode(changed[None], tiled=False)[0] - base).abs().amax(dim=1)
    touched = torch.nonzero(diff > 0).flatten()
    reach = encoder_reach(vae.model.encoder)
    assert int(touched.min()) >= 25 - reach.left_frames and int(touched.max()) <= 25 + reach.right_frames


def test_decoder_reach_bounds_what_one_latent_touches_on_the_parity_vae():
    parity_vae = VAE.from_folder(PARITY / "checkpoints" / "vae")
    reach = decoder_reach(parity_vae.model.decoder)
    latents = torch.randn(1, 48, 64, generator=torch.Generator().manual_seed(2))
    base = parity_vae.decode(latents, tiled=False)[0]
    nudged = latents.clone()
    nudged[:, 24] += 1.0
    diff = (parity_vae.decode(nudged, tiled=False)[0] - base).abs().amax(dim=0)
    frames = torch.nonzero(diff > 0).flatten() // HOP_SAMPLES
    # output frame f reads latents f - left .. f + right, so latent 24 reaches frames 24 - right .. 24 + left
    assert int(frames.min()) >= 24 - reach.right_frames and int(frames.max()) <= 24 + reach.left_frames


def test_encode_span_equals_the_full_encode_inside_the_span(vae):
    wave = _wave(3.0)
    full = vae.encode(wave[None], tiled=False)[0]
    reach = encoder_reach(vae.model.encoder)
    for start, end in ((30, 40), (0, 5), (70, 75)):
        part, encoded = encode_span(vae, wave, start, end, reach)
        assert _close(part, full[start:end])
        assert encoded <= end - start + reach.left_frames + reach.right_frames + 2


def test_decode_span_equals_the_full_decode_inside_the_span(vae):
    latents = torch.randn(2, 90, 4, generator=torch.Generator().manual_seed(3))
    full = vae.decode(latents, tiled=False)
    reach = decoder_reach(vae.model.decoder)
    for start, end in ((40, 52), (0, 6), (80, 90)):
        part, decoded = decode_span(vae, latents, start, end, reach, tiled=False)
        assert _close(part, full[..., start * HOP_SAMPLES:end * HOP_SAMPLES], 1e-4)
        assert decoded <= end - start + 2 * reach.frames


def test_source_cache_hit_partial_and_miss(vae):
    cache = SourceCache()
    reach = encoder_reach(vae.model.encoder)

    def encode_part(wave, start, end):
        return encode_span(vae, wave, start, end, reach)

    wave = _wave(4.0)
    frames = wave.shape[-1] // HOP_SAMPLES
    first = EncodeReport()
    latents = cache.encode(wave, encode_part, reach, first)
    assert first.status == "miss" and first.encoded_frames == frames

    again = EncodeReport()
    assert torch.equal(cache.encode(wave.clone(), encode_part, reach, again), latents)
    assert again.status == "hit" and again.encoded_frames == 0

    edited = wave.clone()
    edited[:, 50 * HOP_SAMPLES:60 * HOP_SAMPLES] = 0.3 * torch.randn(2, 10 * HOP_SAMPLES)  # bars 9-12, say
    partial = EncodeReport()
    mixed = cache.encode(edited, encode_part, reach, partial)
    assert partial.status == "partial"
    assert partial.encoded_frames <= 10 + 4 * (reach.frames + 1) + 2
    assert _close(mixed, vae.encode(edited[None], tiled=False)[0])

    other = EncodeReport()
    cache.encode(_wave(4.0, seed=9), encode_part, reach, other)
    assert other.status == "miss"


def test_a_longer_take_reuses_everything_but_the_end(vae):
    cache = SourceCache()
    reach = encoder_reach(vae.model.encoder)
    wave = _wave(3.0)
    cache.encode(wave, lambda w, a, b: encode_span(vae, w, a, b, reach), reach)
    longer = torch.cat([wave, _wave(1.0, seed=4)], dim=-1)
    report = EncodeReport()
    latents = cache.encode(longer, lambda w, a, b: encode_span(vae, w, a, b, reach), reach, report)
    assert report.status == "partial" and report.spans[0][0] >= 75 - 2 * (reach.frames + 1)
    assert _close(latents, vae.encode(longer[None], tiled=False)[0])


def test_remembered_result_latents_are_a_hit():
    cache = SourceCache()
    wave, latents = _wave(1.0), torch.randn(25, 64)
    cache.remember(wave, latents)
    report = EncodeReport()
    got = cache.encode(wave.clone(), lambda *a: pytest.fail("nothing may be encoded"), Reach(7, 7), report)
    assert report.status == "hit" and torch.equal(got, latents)


def test_the_cache_is_bounded_in_bytes():
    one = 25 * 64 * 4 + 16 * 25
    cache = SourceCache(max_bytes=2 * one + 10)
    for seed in range(4):
        cache.remember(_wave(1.0, seed=seed), torch.randn(25, 64))
    assert len(cache.entries) == 2 and cache.entries.nbytes <= 2 * one + 10


def test_hashes_and_spans():
    wave = _wave(0.1)
    assert len(hop_hashes(wave)) == -(-wave.shape[-1] // HOP_SAMPLES)
    flags = torch.tensor([True, False, False, True, True, False, True, True, True, True, False])
    assert missing_spans(flags, merge_gap=1) == [(1, 3), (5, 6), (10, 11)]
    assert missing_spans(flags, merge_gap=3) == [(1, 6), (10, 11)]
