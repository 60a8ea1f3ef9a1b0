"""Audio loading/normalisation, writing, and the reference montage."""

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.audio_io import load_audio, reference_montage, write_audio
from engine.types import EngineError
from tests.conftest import PARITY

SR = 48000


def _sine(freq, seconds, rate, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_parity_source_loads_unchanged():
    wave = load_audio(PARITY / "cases" / "audio" / "source.wav")
    raw, rate = sf.read(PARITY / "cases" / "audio" / "source.wav", dtype="float32")
    assert rate == SR and wave.dtype == torch.float32 and wave.shape == (2, 283200)
    assert torch.equal(wave, torch.from_numpy(raw.T.copy()))


def test_mono_44k1_is_duplicated_and_resampled(tmp_path):
    path = tmp_path / "mono.wav"
    sf.write(path, _sine(440.0, 1.0, 44100), 44100, subtype="PCM_16")
    wave = load_audio(path)
    assert wave.shape == (2, SR)
    assert torch.equal(wave[0], wave[1])
    # the tone survives resampling: dominant frequency still 440 Hz, amplitude kept
    spectrum = np.abs(np.fft.rfft(wave[0, 4800:-4800].numpy()))
    freq = np.argmax(spectrum) * SR / (SR - 9600)
    assert abs(freq - 440.0) < 2.0
    assert 0.48 < float(wave.abs().max()) < 0.52


def test_96k_four_channels_keeps_first_two(tmp_path):
    path = tmp_path / "quad.flac"
    n = 96000 // 2
    data = np.stack([_sine(200, 0.5, 96000), _sine(300, 0.5, 96000),
                     _sine(400, 0.5, 96000), np.full(n, 0.9, np.float32)], axis=1)
    sf.write(path, data, 96000, subtype="PCM_24")
    wave = load_audio(path)
    assert wave.shape == (2, SR // 2)
    assert float(wave.abs().max()) <= 1.0
    right = wave[1, 2400:-2400].numpy()
    spectrum = np.abs(np.fft.rfft(right))
    assert abs(np.argmax(spectrum) * SR / len(right) - 300.0) < 4.0  # channel 1 (300 Hz) kept as right


def test_float_wav_over_full_scale_is_clamped(tmp_path):
    path = tmp_path / "hot.wav"
    sf.write(path, np.stack([_sine(100, 0.2, SR, 1.7)] * 2, axis=1), SR, subtype="FLOAT")
    wave = load_audio(path)
    assert float(wave.max()) == 1.0 and float(wave.min()) == -1.0


@pytest.mark.parametrize("kind", ["missing", "corrupt", "empty", "silent", "too_long", "nan"])
def test_bad_input_names_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    elif kind == "empty":
        sf.write(path, np.zeros((0, 2), np.float32), SR)
    elif kind == "silent":
        sf.write(path, np.zeros((SR, 2), np.float32), SR)
    elif kind == "too_long":
        sf.write(path, np.full((8000 * 601, 1), 0.1, np.float32), 8000, subtype="PCM_16")
    elif kind == "nan":
        data = np.full((100, 2), 0.1, np.float32)
        data[5, 0] = np.nan
        sf.write(path, data, SR, subtype="FLOAT")
    with pytest.raises(EngineError) as err:
        load_audio(path, what="source audio")
    message = str(err.value)
    assert str(path) in message and message.startswith("source audio")
    expected = {"missing": "does not exist", "corrupt": "not a readable", "empty": "empty",
                "silent": "silent", "too_long": "minutes", "nan": "NaN"}[kind]
    assert expected in message


def test_write_audio_round_trips(tmp_path):
    wave = torch.rand(2, 4800) * 1.6 - 0.8
    wav_path = write_audio(tmp_path / "out.wav", wave)
    back, rate = sf.read(wav_path, dtype="float32")
    assert rate == SR and np.array_equal(back.T, wave.numpy())
    flac_path = write_audio(tmp_path / "out.flac", wave.numpy(), fmt="flac")
    back, _ = sf.read(flac_path, dtype="float32")
    assert np.abs(back.T - wave.numpy()).max() < 2e-7 * 8
    with pytest.raises(EngineError, match="unsupported"):
        write_audio(tmp_path / "out.mp3", wave)


def test_reference_montage_short_input_uses_window_at_start_of_each_third():
    # A 3.3 s ramp repeats 10 times to 33 s; thirds are 11 s; windows start at 0, 11 s, 22 s.
    n = int(3.3 * SR)
    wave = torch.arange(n, dtype=torch.float32).repeat(2, 1)
    montage = reference_montage(wave)
    assert montage.shape == (2, 30 * SR)
    repeated = wave.repeat(1, 10)
    third = repeated.shape[-1] // 3
    for k in range(3):
        window = montage[:, k * 10 * SR:(k + 1) * 10 * SR]
        assert torch.equal(window, repeated[:, k * third:k * third + 10 * SR])


def test_reference_montage_long_input_is_deterministic():
    wave = torch.randn(2, 45 * SR)
    a = reference_montage(wave)
    assert torch.equal(a, reference_montage(wave))
    assert torch.equal(a[:, :10 * SR], wave[:, :10 * SR])
    assert torch.equal(a[:, 10 * SR:20 * SR], wave[:, 15 * SR:25 * SR])
    assert torch.equal(a[:, 20 * SR:], wave[:, 30 * SR:40 * SR])


def test_decoded_size_is_capped_before_decoding(tmp_path, monkeypatch):
    """A small FLAC with 8 channels at 96 kHz is refused from its header, naming why, before any read."""
    import engine.audio_io as audio_io

    assert "8 channels x 312 s" in audio_io.decode_problem(30_000_000, 8, 96000)
    assert audio_io.decode_problem(48000 * 600, 2, 48000) is None
    assert "sample rate" in audio_io.decode_problem(10, 2, 10_000_000)
    path = tmp_path / "bomb.flac"
    sf.write(path, np.zeros((96000, 8), np.float32), 96000, subtype="PCM_16")  # silence compresses to KB
    monkeypatch.setattr(audio_io, "MAX_DECODED_VALUES", 8 * 96000 - 1)  # 1 s of it is over the limit here

    def no_read(*args, **kwargs):
        raise AssertionError("decoded although over the limit")

    monkeypatch.setattr(audio_io, "_read_first_two_channels", no_read)
    with pytest.raises(EngineError, match=r"8 channels x 1 s at 96000 Hz = 1 million samples, over the limit"):
        load_audio(path, what="reference audio")


def test_many_channels_are_read_two_at_a_time(tmp_path):
    path = tmp_path / "eight.wav"
    data = np.stack([_sine(100 * (c + 1), 0.25, SR) for c in range(8)], axis=1)
    sf.write(path, data, SR, subtype="FLOAT")
    wave = load_audio(path)
    assert wave.shape == (2, SR // 4)
    assert torch.allclose(wave, torch.from_numpy(data[:, :2].T.copy()))
