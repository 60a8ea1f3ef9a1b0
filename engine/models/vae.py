"""The ACE-Step 1.5 audio VAE (diffusers `AutoencoderOobleck`): 48 kHz stereo <-> 25 Hz x 64 latents.

`encode` returns the posterior mean (deterministic; upstream samples). Both directions can be
tiled so long audio fits in memory: encode windows of `encode_chunk_s` seconds with
`encode_overlap_s` of context each side, decode windows of 256 frames with 64 frames of context
each side; only the core of each window is kept (overlap-discard), so tiles never blend.
"""

from __future__ import annotations

import torch

from engine.checkpoints import load_vae
from engine.units import HOP_SAMPLES as HOP
from engine.units import SAMPLE_RATE

LATENT_CHANNELS = 64


def fold_weight_norm(model: torch.nn.Module) -> int:
    """Replace every weight-normed layer's (g, v) pair by the weight it stands for; returns the count.

    diffusers builds Oobleck's convolutions with weight norm, which recomputes `g * v / ||v||` on
    every forward (extra kernels, and the weight held twice: g/v plus the computed copy). At
    inference the product never changes, so it is computed once here, in the run dtype, with the
    same function the forward hook uses: the outputs are unchanged.
    """
    from torch.nn.utils import parametrize

    folded = 0
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            folded += 1
        elif hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)
            folded += 1
    return folded


class VAE:
    def __init__(self, model, device, dtype):
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        # Upstream's CPU / small-GPU policy is 15 s windows; larger GPUs use 30 s.
        self.encode_chunk_s = 30.0 if self.device.type == "cuda" else 15.0
        self.encode_overlap_s = 2.0
        self.decode_chunk_frames = 256
        self.decode_overlap_frames = 64

    @classmethod
    def from_folder(cls, path, device="cpu", dtype=torch.float32) -> VAE:
        """The folder's AutoencoderOobleck, loaded strictly; the published bf16 file is upcast to fp32
        and then moved to the run dtype, and its weight norm folded (`fold_weight_norm`)."""
        model = load_vae(path)
        # torch's own `to`: diffusers' override warns "should be kept in float32: []" on every cast,
        # even though Oobleck names no such module.
        model = torch.nn.Module.to(model, device=device, dtype=dtype).eval().requires_grad_(False)
        fold_weight_norm(model)
        return cls(model, device, dtype)

    # ------------------------------------------------------------------ encode
    @torch.no_grad()
    def encode(self, wave: torch.Tensor, tiled: bool = True, on_tile=None) -> torch.Tensor:
        """wave [B, 2, N] in [-1, 1] -> latents [B, N // 1920, 64] (posterior mean), float32.

        `on_tile(done, total, samples)` runs after each window (it may raise to cancel).
        """
        wave = wave.to(device=self.device, dtype=self.dtype)
        total = wave.shape[-1]
        chunk = int(self.encode_chunk_s * SAMPLE_RATE)
        if not tiled or total <= chunk:
            latents = self._encode_once(wave)
            if on_tile is not None:
                on_tile(1, 1, total)
            return latents
        overlap = int(self.encode_overlap_s * SAMPLE_RATE)
        core = chunk - 2 * overlap  # samples kept per window (a multiple of HOP)
        frames_total = total // HOP
        tiles = -(-total // core)
        pieces, start = [], 0
        while start < total:
            lo = max(0, start - overlap)
            hi = min(total, start + core + overlap)
            latents = self._encode_once(wave[..., lo:hi])
            if on_tile is not None:
                on_tile(len(pieces) + 1, tiles, hi - lo)
            skip = (start - lo) // HOP
            keep = min(core // HOP, frames_total - start // HOP)
            pieces.append(latents[:, skip:skip + keep])
            start += core
        return torch.cat(pieces, dim=1)[:, :frames_total]

    def _encode_once(self, wave: torch.Tensor) -> torch.Tensor:
        mean = self.model.encode(wave).latent_dist.mean  # [B, 64, T]
        return mean.transpose(1, 2).float()

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tiled: bool = True, on_tile=None) -> torch.Tensor:
        """latents [B, T, 64] -> wave [B, 2, T * 1920], float32.

        `on_tile(done, total, frames)` runs after each window (it may raise to cancel).
        """
        latents = latents.to(device=self.device, dtype=self.dtype).transpose(1, 2)  # [B, 64, T]
        frames = latents.shape[-1]
        chunk, overlap = self.decode_chunk_frames, self.decode_overlap_frames
        if not tiled or frames <= chunk:
            wave = self._decode_once(latents)
            if on_tile is not None:
                on_tile(1, 1, frames)
            return wave
        core = chunk - 2 * overlap
        tiles = -(-frames // core)
        pieces, start = [], 0
        while start < frames:
            lo = max(0, start - overlap)
            hi = min(frames, start + core + overlap)
            wave = self._decode_once(latents[..., lo:hi])
            if on_tile is not None:
                on_tile(len(pieces) + 1, tiles, hi - lo)
            skip = (start - lo) * HOP
            keep = (min(start + core, frames) - start) * HOP
            pieces.append(wave[..., skip:skip + keep])
            start += core
        return torch.cat(pieces, dim=-1)

    def _decode_once(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latents).sample.float()
