"""Source/reference preparation for the audio tasks, with a fake VAE (no model weights needed)."""

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.request import TRACK_NAMES, GenerationRequest, RequestError
from engine.task_inputs import (
    check_track_names,
    parse_audio_codes,
    prepare_reference,
    prepare_source,
    silence_frames,
)

SR = 48000
SILENCE = torch.arange(300 * 64, dtype=torch.float32).reshape(1, 300, 64) * -1.0


def fake_encode(wave):
    """One frame per 1920 samples: the frame's mean of channel 0 in every channel, plus 100."""
    frames = wave.shape[-1] // 1920
    means = wave[0, :frames * 1920].reshape(frames, 1920).mean(dim=1)
    return means[:, None].repeat(1, 64) + 100.0


def fake_decode_codes(codes):
    hints = torch.tensor(codes, dtype=torch.float32).repeat_interleave(5)
    return hints[None, :, None].repeat(1, 1, 64)


def _source(tmp_path, seconds=8.0, name="src.wav"):
    path = tmp_path / name
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 3 * t)] * 2, axis=1).astype(np.float32), SR,
             subtype="FLOAT")
    return str(path)


def _request(**fields):
    return GenerationRequest.from_dict(fields)


def test_repaint_replaces_region_with_same_silence_frames(tmp_path):
    req = _request(task_type="repaint", src_audio=_source(tmp_path), repainting_start=2.0, repainting_end=5.5)
    inputs = prepare_source(req, fake_encode, fake_decode_codes, SILENCE)
    assert inputs.frames == 200 and inputs.region_frames == (50, 137)
    assert torch.equal(inputs.src_latents[0, 50:137], SILENCE[0, 50:137])
    assert torch.equal(inputs.src_latents[0, :50], inputs.target_latents[0, :50])
    assert torch.equal(inputs.src_latents[0, 137:], inputs.target_latents[0, 137:])
    assert (inputs.target_latents[0] >= 99).all()  # the clean source is untouched
    assert inputs.chunk_masks[0, :, 0].tolist() == [0.0] * 50 + [1.0] * 87 + [0.0] * 63
    assert inputs.repaint_mask[0].tolist() == [False] * 50 + [True] * 87 + [False] * 63
    assert not inputs.is_cover and inputs.source_seconds == 8.0


def test_auto_chunk_mask_mode_is_all_ones(tmp_path):
    req = _request(task_type="repaint", src_audio=_source(tmp_path), repainting_start=2.0, repainting_end=5.5,
                   chunk_mask_mode="auto")
    inputs = prepare_source(req, fake_encode, fake_decode_codes, SILENCE)
    assert inputs.chunk_masks.min() == 1.0
    assert inputs.repaint_mask[0, :50].any().item() is False


def test_lego_keeps_the_source_inside_the_region(tmp_path):
    req = _request(task_type="lego", src_audio=_source(tmp_path), track_name="guitar")
    inputs = prepare_source(req, fake_encode, fake_decode_codes, SILENCE)
    assert inputs.region_frames == (0, 200)
    assert torch.equal(inputs.src_latents, inputs.target_latents)
    assert inputs.repaint_mask.all()


def test_continuation_pads_right_and_prompt_duration_stays_the_source_length(tmp_path):
    req = _request(task_type="repaint", src_audio=_source(tmp_path), repainting_start=8.0, repainting_end=20.0)
    inputs = prepare_source(req, fake_encode, fake_decode_codes, SILENCE)
    assert inputs.wave.shape[-1] == 20 * SR
    assert inputs.frames == 500 and inputs.region_frames == (200, 500)
    assert inputs.source_seconds == 8.0
    assert inputs.wave[:, 8 * SR:].abs().max() == 0


def test_short_source_is_extended_with_first_silence_frames(tmp_path):
    req = _request(task_type="extract", src_audio=_source(tmp_path, seconds=2.0), track_name="vocals")
    inputs = prepare_source(req, fake_encode, fake_decode_codes, SILENCE)
    assert inputs.frames == 128
    assert torch.equal(inputs.target_latents[0, 50:], SILENCE[0, :78])
    assert inputs.chunk_masks.min() == 1.0 and inputs.repaint_mask is None


def test_cover_from_source_sets_the_cover_flag(tmp_path):
    inputs = prepare_source(_request(task_type="cover", src_audio=_source(tmp_path)), fake_encode,
                            fake_decode_codes, SILENCE)
    assert inputs.is_cover and inputs.lm_hints is None and inputs.region is None


@pytest.mark.parametrize("codes", ["<|audio_code_7|><|audio_code_70000|>" * 15, [7, 63999] * 15, "7, 63999 " * 15])
def test_cover_from_explicit_codes(tmp_path, codes):
    req = _request(task_type="cover", audio_codes=codes, src_audio=_source(tmp_path))
    inputs = prepare_source(req, fake_encode, fake_decode_codes, SILENCE)
    assert inputs.audio_codes == [7, 63999] * 15  # 70000 clamped like upstream
    assert inputs.is_cover and inputs.frames == 150 and inputs.wave is None
    assert torch.equal(inputs.lm_hints, inputs.src_latents)
    assert inputs.lm_hints[0, :5, 0].tolist() == [7.0] * 5


def test_codes_shorter_than_128_frames_pad_with_silence():
    inputs = prepare_source(_request(task_type="cover", audio_codes=[1, 2, 3]), fake_encode, fake_decode_codes,
                            SILENCE)
    assert inputs.frames == 128
    assert torch.equal(inputs.lm_hints[0, 15:], SILENCE[0, :113])


def test_bad_codes_are_refused():
    with pytest.raises(RequestError, match="audio_code"):
        parse_audio_codes("hello")


@pytest.mark.parametrize("start,end,message", [(1.0, 3.3, "at least 3 s"), (0.0, 95.0, "at most 90 s"),
                                               (9.0, -1, "after the end")])
def test_repaint_region_rules_are_enforced(tmp_path, start, end, message):
    req = _request(task_type="repaint", src_audio=_source(tmp_path), repainting_start=start, repainting_end=end)
    with pytest.raises(RequestError, match=message):
        prepare_source(req, fake_encode, fake_decode_codes, SILENCE)


def test_short_region_allowed_only_when_limits_are_off(tmp_path):
    req = _request(task_type="repaint", src_audio=_source(tmp_path), repainting_start=1.6, repainting_end=3.9)
    inputs = prepare_source(req, fake_encode, fake_decode_codes, SILENCE, enforce_region_limits=False)
    assert inputs.region_frames == (40, 97)
    late = _request(task_type="repaint", src_audio=_source(tmp_path), repainting_start=9.0)
    with pytest.raises(RequestError, match="after the end"):
        prepare_source(late, fake_encode, fake_decode_codes, SILENCE, enforce_region_limits=False)


def test_unknown_track_message_lists_all_names():
    req = GenerationRequest(task_type="lego", src_audio="x.wav", track_name="kazoo")  # skips validate()
    with pytest.raises(RequestError) as err:
        check_track_names(req)
    assert "kazoo" in str(err.value) and all(name in str(err.value) for name in TRACK_NAMES)
    with pytest.raises(RequestError, match="track_classes"):
        check_track_names(GenerationRequest(task_type="complete", track_classes=["drums", "tuba"]))


def test_reference_montage_is_encoded_and_silence_used_without_one(tmp_path):
    assert torch.equal(prepare_reference(_request(), fake_encode, SILENCE), SILENCE[:, :750])
    seen = []

    def encode(wave):
        seen.append(wave.shape)
        return fake_encode(wave)

    ref = prepare_reference(_request(reference_audio=_source(tmp_path, 3.3, "ref.wav")), encode, SILENCE)
    assert seen == [(2, 30 * SR)] and ref.shape == (1, 750, 64)


def test_silence_frames_tiles_when_needed():
    tiled = silence_frames(SILENCE, 400, start=250)
    assert tiled.shape == (400, 64)
    assert torch.equal(tiled[:50], SILENCE[0, 250:])
    assert torch.equal(tiled[50:350], SILENCE[0])
