"""Pipeline pieces that need no model: frame counts, post-processing, device/dtype defaults."""

from __future__ import annotations

import pytest
import torch

from engine.devices import resolve_device_dtype
from engine.pipeline import postprocess_audio
from engine.tasks import text2music_frames
from engine.types import EngineError


def test_text2music_frame_counts():
    assert text2music_frames(4.3) == (128, 4.3)     # raised to the 128-frame minimum
    assert text2music_frames(5.5) == (137, 5.5)     # odd T
    assert text2music_frames(12.34) == (307, 12.34)  # round(12.34, 1) = 12.3 s
    assert text2music_frames(None) == (3000, None)   # 120 s, metas say "30 seconds"
    assert text2music_frames(0) == (3000, None)


def test_postprocess_clamps_hot_items_and_normalises_each_item():
    wave = torch.zeros(3, 2, 100)
    wave[0, 0, 10] = 4.0
    wave[0, 1, 20] = -2.0
    wave[1, 1, 5] = 0.25
    out = postprocess_audio(wave)
    target = 10 ** (-1 / 20)
    assert torch.isclose(out[0].abs().max(), torch.tensor(target))
    assert torch.isclose(out[0, 1, 20], torch.tensor(-target / 2))
    assert torch.isclose(out[1].abs().max(), torch.tensor(target))
    assert torch.equal(out[2], wave[2])  # silence stays silence
    raw = postprocess_audio(wave, normalize=False)
    assert torch.isclose(raw[0].abs().max(), torch.tensor(1.0)) and torch.equal(raw[1], wave[1])


def test_postprocess_hook_runs_before_normalisation():
    wave = torch.full((1, 2, 10), 0.5)
    out = postprocess_audio(wave, hook=lambda w: w * torch.linspace(0, 1, 10))
    assert torch.isclose(out[0, 0, -1], torch.tensor(10 ** (-1 / 20)))


def test_device_and_dtype_defaults():
    device, dtype = resolve_device_dtype("cpu", None)
    assert device.type == "cpu" and dtype == torch.float32
    assert resolve_device_dtype("cpu", "bfloat16")[1] == torch.bfloat16
    with pytest.raises(EngineError, match="dtype"):
        resolve_device_dtype("cpu", "float8")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="CUDA"):
            resolve_device_dtype("cuda", None)
