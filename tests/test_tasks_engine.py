"""Behaviour of the audio tasks through `Pipeline.generate` on the tiny parity checkpoints.

Few sampler steps keep these fast; parity with upstream is in test_parity_tasks.py.
"""

import pytest
import torch

from engine.audio_io import load_audio, write_audio
from engine.request import TRACK_NAMES, GenerationRequest, RequestError
from engine.types import EngineError
from tests.parity_utils import CASES_DIR, case_request, load_case

SR = 48000
SOURCE = str(CASES_DIR / "audio" / "source.wav")


@pytest.fixture
def turbo(pipeline):
    """The session pipeline (turbo DiT), restored after each test."""
    return pipeline


def _repaint(src, start, end, **extra):
    fields = dict(task_type="repaint", src_audio=src, repainting_start=start, repainting_end=end, seed=5,
                  inference_steps=2, caption="test", enable_normalization=False)
    fields.update(extra)
    return GenerationRequest.from_dict(fields)


def test_repaint_keeps_the_outside_exactly(turbo):
    out = turbo.generate(_repaint(SOURCE, 1.0, 4.5), dump=True)
    source = load_audio(SOURCE)
    audio = torch.from_numpy(out.audio[0])
    assert audio.shape == (2, 147 * 1920)
    cf = int(0.025 * SR)
    start, end = int(1.0 * SR), int(4.5 * SR)
    assert torch.equal(audio[:, :start - cf], source[:, :start - cf])
    assert torch.equal(audio[:, end + cf:], source[:, end + cf:audio.shape[1]])
    assert not torch.allclose(audio[:, start:end], source[:, start:end], atol=1e-3)
    # latents: frames beyond the 12-frame boundary blend are exactly the clean source latents
    pred, clean = out.dump["pred_latents"], out.dump["target_latents"]
    assert torch.equal(pred[:, :25 - 12], clean[:, :25 - 12])
    assert torch.equal(pred[:, 112 + 12:], clean[:, 112 + 12:])
    assert not torch.allclose(pred[:, 25:112], clean[:, 25:112])


@pytest.fixture(scope="module")
def short_source(tmp_path_factory):
    """The first 2.5 s of the parity source: continuations encode the source plus the new part, and
    the tiny VAE encoder costs about a second of CPU per second of audio."""
    path = tmp_path_factory.mktemp("short") / "short.wav"
    return write_audio(path, load_audio(SOURCE)[:, :int(2.5 * SR)])


def test_chained_continuation(turbo, short_source, tmp_path):
    source = load_audio(short_source)
    source_s = source.shape[1] / SR
    first = turbo.generate(_repaint(short_source, source_s, source_s + 3.0))
    audio1 = torch.from_numpy(first.audio[0])
    padded = source.shape[1] + int(3.0 * SR)
    assert audio1.shape[1] == padded // 1920 * 1920  # the requested length, cut to whole latent frames
    assert audio1.shape[1] >= (source_s + 3.0) * SR - 1920
    keep = source.shape[1] - int(0.025 * SR)
    assert torch.equal(audio1[:, :keep], source[:, :keep])
    assert audio1[:, source.shape[1]:].abs().max() > 1e-3  # the new part is not silence

    path1 = write_audio(tmp_path / "first.wav", audio1)
    seconds1 = audio1.shape[1] / SR
    end2 = seconds1 + 3.2
    second = turbo.generate(_repaint(path1, seconds1, end2, seed=6))
    audio2 = torch.from_numpy(second.audio[0])
    assert audio2.shape[1] == (audio1.shape[1] + int((end2 - seconds1) * SR)) // 1920 * 1920
    keep2 = audio1.shape[1] - int(0.025 * SR)
    assert torch.equal(audio2[:, :keep2], audio1[:, :keep2])


def test_normalised_continuation_scales_the_old_part_uniformly(turbo, short_source):
    source = load_audio(short_source).double()
    source_s = source.shape[1] / SR
    out = turbo.generate(_repaint(short_source, source_s, source_s + 3.0, enable_normalization=True))
    audio = torch.from_numpy(out.audio[0]).double()
    keep = source.shape[1] - int(0.025 * SR)
    gain = audio[:, :keep].abs().max() / source[:, :keep].abs().max()
    assert torch.allclose(audio[:, :keep], gain * source[:, :keep], atol=1e-6)
    assert abs(audio.abs().max().item() - 10 ** (-1 / 20)) < 1e-6


@pytest.mark.parametrize("start,end,message", [(1.0, 2.5, "at least 3 s"), (0.0, 100.0, "at most 90 s"),
                                               (7.0, -1, "after the end")])
def test_bad_regions_are_refused(turbo, start, end, message):
    with pytest.raises(RequestError, match=message):
        turbo.generate(_repaint(SOURCE, start, end))


def test_bad_source_file_is_named(turbo, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(EngineError, match="broken.wav"):
        turbo.generate(_repaint(str(bad), 0.0, 3.0))


def test_unknown_track_lists_the_names(turbo):
    request = GenerationRequest(task_type="lego", src_audio=SOURCE, track_name="kazoo")
    with pytest.raises(RequestError) as err:
        turbo.generate(request)
    assert "kazoo" in str(err.value) and all(name in str(err.value) for name in TRACK_NAMES)


def test_stem_tasks_need_a_base_model(turbo):
    request = GenerationRequest.from_dict(dict(task_type="extract", src_audio=SOURCE, track_name="vocals"))
    with pytest.raises(EngineError, match="base DiT"):
        turbo.generate(request)


def test_explicit_codes_give_the_same_hints_as_the_source(turbo):
    _, expected, path = load_case("cover_turbo_strength1")
    codes = expected["audio_codes"].flatten().tolist()
    as_tokens = "".join(f"<|audio_code_{c}|>" for c in codes)
    for given in (codes, as_tokens):
        request = case_request(path).replace(audio_codes=given, src_audio=None,
                                                                  inference_steps=1)
        out = turbo.generate(request, dump=True)
        context = out.dump["context_latents"]
        assert context.shape == (1, 150, 128)  # 30 codes x 5 frames
        ref = expected["context_latents"]
        err = (context[:, :147] - ref).abs().max() / ref.pow(2).mean().sqrt()
        assert err < 1e-4
        assert torch.equal(out.dump["audio_codes"].flatten(), expected["audio_codes"].flatten())


def test_text2music_uses_the_reference_timbre(turbo):
    _, expected, path = load_case("cover_turbo_strength05_reference")
    request = GenerationRequest.from_dict(dict(caption="x", duration=5.2, seed=1, inference_steps=1,
                                               reference_audio=str(CASES_DIR / "audio" / "reference.wav")))
    out = turbo.generate(request, dump=True)
    ref = expected["refer_audio_latents"]
    err = (out.dump["refer_audio_latents"] - ref).abs().max() / ref.pow(2).mean().sqrt()
    assert err < 1e-4
