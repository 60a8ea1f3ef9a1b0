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


def test_output_region_is_cut_sample_exact_at_the_host_rate():
    import numpy as np

    from engine.pipeline import shape_output

    t = np.arange(48000 * 6) / 48000
    audio = np.stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 440 * t)]).astype(np.float32)
    same_rate = shape_output(audio, [1.5, 4.0], 48000)
    assert np.array_equal(same_rate, audio[:, 72000:192000])
    host = shape_output(audio, [1.5, 4.0], 44100)
    assert host.shape == (2, int(4.0 * 44100) - int(1.5 * 44100))
    t_host = (np.arange(host.shape[1]) + int(1.5 * 44100)) / 44100
    assert np.abs(host[0] - np.sin(2 * np.pi * 440 * t_host)).max() < 1e-3  # the same tone, in place
    assert shape_output(audio, [5.0, -1], 44100).shape == (2, int(6.0 * 44100) - int(5.0 * 44100))
    past_the_end = shape_output(audio, [5.0, 6.5], 48000)  # the output is whole frames; the clip is exact
    assert past_the_end.shape == (2, 72000) and not past_the_end[:, 48000:].any()
    with pytest.raises(EngineError, match="output_region"):
        shape_output(audio, [7.0, 8.0], 48000)


def test_output_fields_are_checked_by_name():
    from engine.request import GenerationRequest, RequestError

    for field, value in (("output_region", [3.0, 2.0]), ("output_region", [1.0]), ("output_region", [-1, 2]),
                         ("output_sample_rate", 1000), ("output_sample_rate", "fast")):
        with pytest.raises(RequestError) as info:
            GenerationRequest.from_dict({"caption": "x", field: value})
        assert info.value.field == field
    ok = GenerationRequest.from_dict({"caption": "x", "output_region": [1, -1], "output_sample_rate": 44100.0})
    assert ok.output_region == [1.0, -1.0] and ok.output_sample_rate == 44100
