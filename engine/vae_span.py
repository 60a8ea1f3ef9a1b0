"""Parts of a waveform or a latent sequence through the VAE, exact where it matters.

A VAE latent frame depends only on the samples within the encoder's receptive field, and an
output sample only on the latent frames within the decoder's. Both reaches are computed here from
the convolutions the loaded VAE was built with (kernel, stride, dilation and padding of each
layer, in order), never typed in. With them:

* `encode_span` encodes frames [a, b) of a waveform from just those samples plus the reach;
* `decode_span` decodes output frames [a, b) from just those latents plus the reach.

Inside the span the result equals a full pass (up to float rounding), which is what makes the
source cache's partial re-encode and the repaint's region-only decode safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.units import HOP_SAMPLES


@dataclass(frozen=True)
class Reach:
    """How far (in latent frames, each side) an output of a stack of convolutions looks."""

    left_frames: int
    right_frames: int

    @property
    def frames(self) -> int:
        return max(self.left_frames, self.right_frames)


def _convs(module: torch.nn.Module):
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            yield layer


def encoder_reach(encoder: torch.nn.Module, hop_samples: int = HOP_SAMPLES) -> Reach:
    """Samples a latent frame reads, as frames each side of its own hop.

    Output position i of a conv (kernel k, stride s, dilation d, padding p) reads its input
    positions [i*s - p, i*s - p + (k-1)*d]; composing the layers gives the raw-sample window.
    """
    left = right = 0
    jump = 1  # raw samples per position of the current layer's input
    for conv in _convs(encoder):
        k, s, d, p = conv.kernel_size[0], conv.stride[0], conv.dilation[0], conv.padding[0]
        left += p * jump
        right += ((k - 1) * d - p) * jump
        jump *= s
    # Frame t reads samples [t*hop - left, t*hop + right]; its own hop is [t*hop, (t+1)*hop).
    return Reach(math.ceil(left / hop_samples), math.ceil(max(0, right - (hop_samples - 1)) / hop_samples))


def decoder_reach(decoder: torch.nn.Module) -> Reach:
    """Latent frames an output sample reads, each side of the frame it belongs to.

    Forward influence: latent t reaches outputs [t*J - left, t*J + right] where J is the total
    upsampling (the hop). A conv at the current rate moves the edges by its taps; a transposed
    conv (kernel k, stride s, padding p) maps position j to [j*s - p, j*s - p + k - 1].
    """
    left = right = 0
    jump = 1
    for conv in _convs(decoder):
        k, s, d, p = conv.kernel_size[0], conv.stride[0], conv.dilation[0], conv.padding[0]
        if isinstance(conv, torch.nn.ConvTranspose1d):
            left, right = left * s + p, right * s + (k - 1) * d - p
            jump *= s
        else:
            left, right = left + (k - 1) * d - p, right + p
    # Latent t touches samples [t*J - left, t*J + right]: frames t - ceil(left/J) .. t + ceil(right/J).
    # Seen from an output frame f, the latents it reads lie within the mirrored range.
    return Reach(math.ceil(right / jump), math.ceil(left / jump) + 1)


def vae_reaches(vae) -> tuple[Reach, Reach]:
    """(encoder reach, decoder reach) of a loaded `engine.models.vae.VAE`."""
    return encoder_reach(vae.model.encoder), decoder_reach(vae.model.decoder)


def encode_span(vae, wave: torch.Tensor, start_frame: int, end_frame: int, reach: Reach,
                on_tile=None) -> tuple[torch.Tensor, int]:
    """Latents [end - start, 64] of frames [start, end) of `wave` [2, S], and the frames encoded.

    Only samples of frames [start - reach, end + reach) go through the encoder.
    """
    total_frames = wave.shape[-1] // HOP_SAMPLES
    lo = max(0, start_frame - reach.left_frames - 1)
    hi = min(total_frames, end_frame + reach.right_frames + 1)
    hi_samples = wave.shape[-1] if hi == total_frames else hi * HOP_SAMPLES
    latents = vae.encode(wave[None, :, lo * HOP_SAMPLES:hi_samples], tiled=True, on_tile=on_tile)[0]
    return latents[start_frame - lo:end_frame - lo], hi - lo


def decode_span(vae, latents: torch.Tensor, start_frame: int, end_frame: int, reach: Reach,
                tiled: bool = True, on_tile=None) -> tuple[torch.Tensor, int]:
    """Audio [B, 2, (end - start) * hop] of output frames [start, end) of `latents` [B, T, 64], and
    the frames decoded. Only latents [start - reach, end + reach) go through the decoder."""
    total = latents.shape[1]
    lo = max(0, start_frame - reach.left_frames)
    hi = min(total, end_frame + reach.right_frames)
    wave = vae.decode(latents[:, lo:hi], tiled=tiled, on_tile=on_tile)
    offset = (start_frame - lo) * HOP_SAMPLES
    return wave[..., offset:offset + (end_frame - start_frame) * HOP_SAMPLES], hi - lo
