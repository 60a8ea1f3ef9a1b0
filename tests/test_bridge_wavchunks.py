import os
import struct

import numpy as np
import pytest
import soundfile as sf

from bridge.wavchunks import AcidInfo, BextInfo, SmplInfo, WavError, describe, key_to_midi_note, read_wav, write_wav


def _tone(frames=4410, channels=2, sr=44100):
    t = np.arange(frames) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * t + c) for c in range(channels)]).astype(np.float32)


@pytest.mark.parametrize("fmt,tol", [("pcm16", 1 / 32767), ("pcm24", 1 / 8388607), ("float32", 0)])
def test_round_trip_audio_and_chunks(tmp_path, fmt, tol):
    audio = _tone()
    path = write_wav(tmp_path / "a.wav", audio, 44100, sample_format=fmt,
                     acid=AcidInfo(tempo=96.0, num_beats=24, meter_num=3, meter_den=4, root_note=57),
                     bext=BextInfo(time_reference=123456789012, description="repaint bar 3"),
                     smpl=SmplInfo(44100, unity_note=57, loop_start=0, loop_end=4409))
    wav = read_wav(path)
    assert wav.sample_rate == 44100 and wav.length_samples == 4410 and wav.sample_format == fmt
    assert np.max(np.abs(wav.audio - audio)) <= tol + 1e-7
    assert wav.acid == AcidInfo(96.0, 24, 3, 4, 57)
    assert wav.bext.time_reference == 123456789012
    assert wav.bext.description == "repaint bar 3" and wav.bext.originator == "ACE Companion"
    assert (wav.smpl.unity_note, wav.smpl.loop_start, wav.smpl.loop_end) == (57, 0, 4409)
    assert wav.chunks[-1] == "data" and "acid" in wav.chunks and "bext" in wav.chunks
    # other readers agree on the audio
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == 44100 and data.shape == (4410, 2)
    assert np.max(np.abs(data.T - wav.audio)) < 1e-6


def test_acid_bytes_layout(tmp_path):
    path = write_wav(tmp_path / "b.wav", _tone(100), 48000,
                     acid=AcidInfo(tempo=120.5, num_beats=16, meter_num=7, meter_den=8, root_note=None))
    raw = open(path, "rb").read()
    i = raw.index(b"acid")
    size, = struct.unpack("<I", raw[i + 4:i + 8])
    assert size == 24
    flags, root, _, _, beats, den, num, tempo = struct.unpack("<IHHfIHHf", raw[i + 8:i + 32])
    assert flags == 0x04 and root == 0  # stretch only: no root note flag without a key
    assert (beats, den, num) == (16, 8, 7) and tempo == pytest.approx(120.5)


def test_bext_size_and_reference_split(tmp_path):
    raw = BextInfo(time_reference=(5 << 32) + 7).pack()
    assert len(raw) == 602
    assert struct.unpack("<II", raw[338:346]) == (7, 5)
    with pytest.raises(WavError):
        BextInfo(time_reference=-1).pack()


def test_odd_chunk_is_padded_and_mono_works(tmp_path):
    path = write_wav(tmp_path / "m.wav", np.zeros(3, dtype=np.float32), 44100, sample_format="pcm24",
                     bext=BextInfo(0, coding_history="A=PCM"))  # 605 bytes -> padded
    wav = read_wav(path)
    assert wav.audio.shape == (1, 3) and wav.bext.coding_history == "A=PCM"


def test_truncated_and_bogus_files_are_named(tmp_path):
    path = write_wav(tmp_path / "t.wav", _tone(), 44100)
    raw = open(path, "rb").read()
    (tmp_path / "cut.wav").write_bytes(raw[:-100])
    with pytest.raises(WavError, match="truncated"):
        read_wav(tmp_path / "cut.wav")
    (tmp_path / "junk.wav").write_bytes(b"hello world, not a wav")
    with pytest.raises(WavError, match="RIFF"):
        read_wav(tmp_path / "junk.wav")
    with pytest.raises(WavError, match="sample format"):
        write_wav(tmp_path / "x.wav", _tone(), 44100, sample_format="pcm8")
    assert sorted(os.listdir(tmp_path)) == ["cut.wav", "junk.wav", "t.wav"]


def test_reads_soundfile_output(tmp_path):
    sf.write(tmp_path / "s.wav", _tone().T, 44100, subtype="PCM_16")
    wav = read_wav(tmp_path / "s.wav")
    assert wav.acid is None and wav.length_samples == 4410
    assert describe(wav)["length_samples"] == 4410


def test_key_to_midi_note():
    assert key_to_midi_note("A minor") == 57
    assert key_to_midi_note("C major") == 48
    assert key_to_midi_note("F# major") == 54
    assert key_to_midi_note("Bb minor") == 58
    assert key_to_midi_note("Cb major") == 59
    assert key_to_midi_note("") is None
    assert key_to_midi_note("H minor") is None


def test_clip_helpers(tmp_path):
    from bridge.clips import apply_edge_fades, clip_path, is_within, safe_name, source_excerpt, take
    sr = 8000
    ramp = np.arange(sr * 2, dtype=np.float32) / sr  # value = seconds into the file
    sf.write(tmp_path / "mono.wav", ramp, sr, subtype="FLOAT")
    part = source_excerpt(tmp_path / "mono.wav", 2.0, 3.0, out_sr=sr, file_offset_s=0.5)
    assert part.shape == (2, sr)  # mono doubled; 2.0 s project = 1.5 s into the file
    assert part[0, 0] == pytest.approx(1.5) and part[1, 100] == pytest.approx(1.5 + 100 / sr)
    assert np.all(part[:, sr // 2 + 10:] == 0)  # past the file's end: silence
    assert take(np.ones((2, 4), np.float32), -2, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    faded = apply_edge_fades(np.ones((2, 1000), np.float32), 1000, 10)
    assert faded[0, 0] == 0 and faded[0, -1] == 0 and faded[0, 500] == 1
    assert safe_name("My Song/../x") == "My_Song_.._x" and safe_name("") == "untitled"
    first = clip_path(tmp_path, "Song", "repaint", 3, 7)
    second = clip_path(tmp_path, "Song", "repaint", 3, 7)
    assert first.endswith("Song-repaint-3-7.wav") and second.endswith("Song-repaint-3-7-2.wav")
    assert is_within(first, [tmp_path]) and not is_within("/etc/passwd", [tmp_path])
    assert not is_within(str(tmp_path / ".." / "x.wav"), [tmp_path])
