"""Source sessions: VAE latents of the audio the engine has seen, so the same audio is encoded once.

Each entry is keyed by a hash of the waveform's content (48 kHz stereo float32, as loaded) and
holds its latents plus one hash per 1920-sample hop. When a new waveform arrives:

* same content: its latents are served as they are (`hit`, nothing encoded);
* it matches a cached one except inside some spans (the DAW case: the musician changed bars 9-12):
  only those spans plus the encoder's reach are encoded and the rest is reused (`partial`);
* otherwise it is encoded whole (`miss`).

A frame is reused only when every hop it reads (its encoder reach) is unchanged, and, near the end,
when both waveforms end on the same sample, so a reused frame equals a fresh encode. The latents
of generated results are stored too (`remember`: the DiT's output latents, keyed by the audio as
written), so repainting a take the engine just made encodes nothing, and continuing it encodes only
the new span. The store is an LRU bounded in bytes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.units import HOP_SAMPLES
from engine.vae_span import Reach

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def hop_hashes(wave: torch.Tensor) -> list[bytes]:
    """One 16-byte digest per 1920-sample hop of a [2, S] waveform (the last hop may be partial)."""
    data = np.ascontiguousarray(wave.detach().to("cpu", torch.float32).numpy().T)  # [S, 2]
    return [hashlib.blake2b(data[i:i + HOP_SAMPLES].tobytes(), digest_size=16).digest()
            for i in range(0, data.shape[0], HOP_SAMPLES)]


def content_key(hashes: list[bytes], samples: int) -> str:
    digest = hashlib.blake2b(digest_size=20)
    digest.update(samples.to_bytes(8, "little"))
    for item in hashes:
        digest.update(item)
    return digest.hexdigest()


@dataclass
class SourceEntry:
    key: str
    samples: int
    hashes: list[bytes]
    latents: torch.Tensor            # [samples // 1920, 64] float32 on the CPU
    origin: str = "source"           # "source" (encoded) or "result" (DiT output latents)

    @property
    def nbytes(self) -> int:
        return self.latents.numel() * self.latents.element_size() + 16 * len(self.hashes)


@dataclass
class EncodeReport:
    """What one source encode cost: cache status and latent frames through the encoder."""

    status: str = "none"             # hit | partial | miss | none
    encoded_frames: int = 0
    spans: list[tuple[int, int]] = field(default_factory=list)


class LRU:
    """A byte-bounded least-recently-used map (thread-safe)."""

    def __init__(self, max_bytes: int, size: Callable[[object], int]):
        self.max_bytes = int(max_bytes)
        self._size = size
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            size = self._size(value)
            if size > self.max_bytes:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= self._size(evicted)

    def values(self) -> list:
        with self._lock:
            return list(reversed(self._items.values()))  # most recent first

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


def reusable_frames(hashes: list[bytes], samples: int, entry: SourceEntry, reach: Reach) -> torch.Tensor:
    """Bool [samples // 1920]: frames whose latents `entry` already holds exactly."""
    frames = samples // HOP_SAMPLES
    hops = len(hashes)
    prefix = [0]  # prefix[i] = equal hops among the first i
    for i in range(hops):
        prefix.append(prefix[-1] + (i < len(entry.hashes) and hashes[i] == entry.hashes[i]))
    out = torch.zeros(frames, dtype=torch.bool)
    margin_left, margin_right = reach.left_frames + 1, reach.right_frames + 1
    same_end = entry.samples == samples
    for frame in range(min(frames, entry.latents.shape[0])):
        lo, hi = max(0, frame - margin_left), min(hops, frame + margin_right + 1)
        if hi >= hops and not same_end:
            continue  # the window reaches the end, and the two waveforms end differently
        out[frame] = prefix[hi] - prefix[lo] == hi - lo
    return out


def missing_spans(reusable: torch.Tensor, merge_gap: int) -> list[tuple[int, int]]:
    """Runs of frames that must be encoded, merged when closer than `merge_gap` frames."""
    spans: list[tuple[int, int]] = []
    frame, total = 0, reusable.shape[0]
    flags = reusable.tolist()
    while frame < total:
        if flags[frame]:
            frame += 1
            continue
        start = frame
        while frame < total and not flags[frame]:
            frame += 1
        if spans and start - spans[-1][1] < merge_gap:
            spans[-1] = (spans[-1][0], frame)
        else:
            spans.append((start, frame))
    return spans


class SourceCache:
    """Latents of every source (and result) the engine has seen, by content."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.entries = LRU(max_bytes, lambda entry: entry.nbytes)

    def encode(self, wave: torch.Tensor, encode_span: Callable[[torch.Tensor, int, int], tuple[torch.Tensor, int]],
               reach: Reach, report: EncodeReport | None = None) -> torch.Tensor:
        """Latents [S // 1920, 64] (CPU float32) of `wave` [2, S], encoding only what is not cached.

        `encode_span(wave, start_frame, end_frame) -> (latents, frames_encoded)` runs the VAE.
        """
        report = report if report is not None else EncodeReport()
        samples = wave.shape[-1]
        frames = samples // HOP_SAMPLES
        hashes = hop_hashes(wave)
        key = content_key(hashes, samples)
        entry = self.entries.get(key)
        if entry is not None:
            report.status = "hit"
            return entry.latents
        best, best_count = None, 0
        for candidate in self.entries.values():
            if not any(a == b for a, b in zip(hashes, candidate.hashes)):
                continue  # nothing in common at the same place
            reusable = reusable_frames(hashes, samples, candidate, reach)
            count = int(reusable.sum())
            if count > best_count:
                best, best_count, best_reusable = candidate, count, reusable
        if best is None:
            latents, encoded = encode_span(wave, 0, frames)
            latents = latents.detach().to("cpu", torch.float32)
            report.status, report.encoded_frames, report.spans = "miss", encoded, [(0, frames)]
        else:
            latents = torch.empty(frames, best.latents.shape[-1], dtype=torch.float32)
            keep = min(frames, best.latents.shape[0])
            latents[:keep] = best.latents[:keep]
            spans = missing_spans(best_reusable, merge_gap=2 * (reach.frames + 1))
            encoded = 0
            for start, end in spans:
                part, cost = encode_span(wave, start, end)
                latents[start:end] = part.detach().to("cpu", torch.float32)
                encoded += cost
            report.status = "partial" if spans else "hit"
            report.encoded_frames, report.spans = encoded, spans
        self.entries.put(key, SourceEntry(key, samples, hashes, latents))
        return latents

    def remember(self, wave: torch.Tensor, latents: torch.Tensor, origin: str = "result") -> str:
        """Keep `latents` [T, 64] as the latents of `wave` [2, S] (a generated result as written)."""
        hashes = hop_hashes(wave)
        key = content_key(hashes, wave.shape[-1])
        if self.entries.get(key) is None:
            frames = wave.shape[-1] // HOP_SAMPLES
            stored = latents.detach().to("cpu", torch.float32)[:frames]
            if stored.shape[0] == frames:
                self.entries.put(key, SourceEntry(key, wave.shape[-1], hashes, stored, origin=origin))
        return key
