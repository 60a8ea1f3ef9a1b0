"""A small RIFF/WAVE writer and reader with `acid`, `bext` and `smpl` chunks.

soundfile does not write ACID tempo data or BWF time references, so the bridge writes its clip
files itself. Layouts:

- `acid` (24 bytes, little-endian): u32 flags, u16 root note, u16 unknown (0x8000), f32 unknown
  (0.0), u32 number of beats, u16 meter denominator, u16 meter numerator, f32 tempo.
  Flags: 0x01 one-shot, 0x02 root note valid, 0x04 stretch, 0x08 disk-based.
- `bext` (EBU Tech 3285, 602 bytes + coding history): description 256, originator 32,
  originator reference 32, date 10, time 8, u32 time reference low, u32 high, u16 version,
  UMID 64, 5 x i16 loudness fields, 180 reserved.
- `smpl` (36 bytes + 24 per loop): manufacturer, product, sample period (ns), MIDI unity note,
  pitch fraction, SMPTE format/offset, loop count, sampler data; each loop: id, type, start,
  end (inclusive), fraction, play count.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

ACID_ONE_SHOT = 0x01
ACID_ROOT_NOTE = 0x02
ACID_STRETCH = 0x04
ACID_DISK_BASED = 0x08

FORMAT_PCM = 1
FORMAT_FLOAT = 3
SAMPLE_FORMATS = {"pcm16": (FORMAT_PCM, 16), "pcm24": (FORMAT_PCM, 24), "float32": (FORMAT_FLOAT, 32)}

NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


class WavError(ValueError):
    """A WAV file is malformed, truncated or uses a format this module does not read."""


@dataclass
class AcidInfo:
    tempo: float
    num_beats: int
    meter_num: int = 4
    meter_den: int = 4
    root_note: int | None = None  # MIDI note, e.g. 57 = A3; None = unknown
    one_shot: bool = False

    def pack(self) -> bytes:
        flags = ACID_STRETCH | (ACID_ONE_SHOT if self.one_shot else 0)
        if self.root_note is not None:
            flags |= ACID_ROOT_NOTE
        return struct.pack("<IHHfIHHf", flags, self.root_note or 0, 0x8000, 0.0, int(self.num_beats),
                           int(self.meter_den), int(self.meter_num), float(self.tempo))

    @classmethod
    def unpack(cls, data: bytes) -> AcidInfo:
        if len(data) < 24:
            raise WavError(f"acid chunk is {len(data)} bytes, expected 24")
        flags, root, _, _, beats, den, num, tempo = struct.unpack("<IHHfIHHf", data[:24])
        return cls(tempo=tempo, num_beats=beats, meter_num=num, meter_den=den,
                   root_note=root if flags & ACID_ROOT_NOTE else None, one_shot=bool(flags & ACID_ONE_SHOT))


@dataclass
class BextInfo:
    time_reference: int  # samples since midnight / project start, at the file's rate
    description: str = ""
    originator: str = "ACE Companion"
    originator_reference: str = ""
    origination_date: str = ""  # yyyy-mm-dd
    origination_time: str = ""  # hh-mm-ss
    coding_history: str = ""

    def pack(self) -> bytes:
        def text(value: str, size: int) -> bytes:
            return value.encode("ascii", "replace")[:size].ljust(size, b"\0")
        ref = int(self.time_reference)
        if ref < 0:
            raise WavError(f"bext time reference {ref} is negative")
        body = b"".join([
            text(self.description, 256), text(self.originator, 32), text(self.originator_reference, 32),
            text(self.origination_date, 10), text(self.origination_time, 8),
            struct.pack("<IIH", ref & 0xFFFFFFFF, ref >> 32, 1),
            b"\0" * 64,            # UMID
            b"\0" * 10,            # loudness value/range, max true peak, max momentary/short-term
            b"\0" * 180,           # reserved
            self.coding_history.encode("ascii", "replace"),
        ])
        return body

    @classmethod
    def unpack(cls, data: bytes) -> BextInfo:
        if len(data) < 602:
            raise WavError(f"bext chunk is {len(data)} bytes, expected at least 602")

        def text(a: int, b: int) -> str:
            return data[a:b].split(b"\0", 1)[0].decode("ascii", "replace")
        low, high = struct.unpack("<II", data[338:346])
        return cls(time_reference=(high << 32) | low, description=text(0, 256), originator=text(256, 288),
                   originator_reference=text(288, 320), origination_date=text(320, 330),
                   origination_time=text(330, 338),
                   coding_history=data[602:].split(b"\0", 1)[0].decode("ascii", "replace"))


@dataclass
class SmplInfo:
    sample_rate: int
    unity_note: int = 60
    loop_start: int | None = None
    loop_end: int | None = None  # inclusive, as the format wants

    def pack(self) -> bytes:
        loops = [] if self.loop_start is None or self.loop_end is None else [(self.loop_start, self.loop_end)]
        head = struct.pack("<9I", 0, 0, int(round(1e9 / self.sample_rate)), self.unity_note, 0, 0, 0, len(loops), 0)
        return head + b"".join(struct.pack("<6I", 0, 0, a, b, 0, 0) for a, b in loops)

    @classmethod
    def unpack(cls, data: bytes) -> SmplInfo:
        if len(data) < 36:
            raise WavError(f"smpl chunk is {len(data)} bytes, expected at least 36")
        _, _, period, unity, _, _, _, count, _ = struct.unpack("<9I", data[:36])
        info = cls(sample_rate=int(round(1e9 / period)) if period else 0, unity_note=unity)
        if count and len(data) >= 60:
            _, _, start, end, _, _ = struct.unpack("<6I", data[36:60])
            info.loop_start, info.loop_end = start, end
        return info


@dataclass
class WavFile:
    audio: np.ndarray  # float32 [channels, samples]
    sample_rate: int
    sample_format: str
    acid: AcidInfo | None = None
    bext: BextInfo | None = None
    smpl: SmplInfo | None = None
    chunks: list[str] = field(default_factory=list)  # chunk ids in file order

    @property
    def length_samples(self) -> int:
        return int(self.audio.shape[1])


def key_to_midi_note(key: str | None, octave: int = 3) -> int | None:
    """'A minor' -> 57 (A3), 'F# major' -> 54, 'Bb minor' -> 58; None when there is no key."""
    if not key:
        return None
    note = key.strip().split()[0] if key.strip() else ""
    if not note or note[0].upper() not in NOTE_NAMES:
        return None
    pitch = NOTE_NAMES[note[0].upper()]
    for accidental in note[1:]:
        if accidental in "#♯":
            pitch += 1
        elif accidental in "b♭":
            pitch -= 1
        else:
            return None
    return 12 * (octave + 1) + pitch % 12


WRITE_BLOCK_SAMPLES = 1 << 16  # samples per channel encoded at a time


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
    pad = b"\0" if len(payload) % 2 else b""
    return chunk_id + struct.pack("<I", len(payload)) + payload + pad


def _encode(audio: np.ndarray, sample_format: str) -> bytes:
    interleaved = np.ascontiguousarray(audio.T)
    if sample_format == "float32":
        return interleaved.astype("<f4").tobytes()
    clipped = np.clip(interleaved, -1.0, 1.0)
    if sample_format == "pcm16":
        return np.round(clipped * 32767.0).astype("<i2").tobytes()
    ints = np.round(clipped * 8388607.0).astype("<i4")
    return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, *, sample_format: str = "pcm24",
              acid: AcidInfo | None = None, bext: BextInfo | None = None, smpl: SmplInfo | None = None) -> str:
    """Write `audio` ([channels, samples] float, -1..1) as a WAV with optional metadata chunks.

    The file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    if sample_format not in SAMPLE_FORMATS:
        raise WavError(f"sample format {sample_format!r} is not one of {', '.join(SAMPLE_FORMATS)}")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2 or not 1 <= audio.shape[0] <= 8:
        raise WavError(f"audio must be [channels, samples] with 1-8 channels, got shape {audio.shape}")
    channels = audio.shape[0]
    fmt_code, bits = SAMPLE_FORMATS[sample_format]
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_code, channels, int(sample_rate), int(sample_rate) * block, block, bits)
    chunks = [_chunk(b"fmt ", fmt)]
    if fmt_code == FORMAT_FLOAT:
        fmt_chunk = fmt + struct.pack("<H", 0)
        chunks = [_chunk(b"fmt ", fmt_chunk), _chunk(b"fact", struct.pack("<I", audio.shape[1]))]
    if bext is not None:
        chunks.append(_chunk(b"bext", bext.pack()))
    if acid is not None:
        chunks.append(_chunk(b"acid", acid.pack()))
    if smpl is not None:
        chunks.append(_chunk(b"smpl", smpl.pack()))
    head = b"WAVE" + b"".join(chunks)
    data_bytes = audio.shape[1] * block
    pad = data_bytes % 2
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.part"
    with open(tmp, "wb") as fh:
        fh.write(b"RIFF" + struct.pack("<I", len(head) + 8 + data_bytes + pad) + head)
        fh.write(b"data" + struct.pack("<I", data_bytes))
        # Encoded a block at a time: a whole window's samples are never copied (a 60 s window is
        # 23 MB as float32, and encoding makes several temporaries of that size).
        for start in range(0, audio.shape[1], WRITE_BLOCK_SAMPLES):
            fh.write(_encode(audio[:, start:start + WRITE_BLOCK_SAMPLES], sample_format))
        fh.write(b"\0" * pad)
    os.replace(tmp, path)
    return path


def _read_chunks(fh: BinaryIO) -> list[tuple[str, bytes]]:
    header = fh.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    declared = struct.unpack("<I", header[4:8])[0]
    chunks = []
    while True:
        head = fh.read(8)
        if not head:
            break
        if len(head) < 8:
            raise WavError("truncated chunk header (the file ends mid-chunk)")
        chunk_id = head[:4].decode("latin-1")
        size = struct.unpack("<I", head[4:8])[0]
        payload = fh.read(size)
        if len(payload) < size:
            raise WavError(f"chunk '{chunk_id}' declares {size} bytes but only {len(payload)} are present "
                           f"(RIFF says {declared + 8} bytes): the file is truncated")
        if size % 2:
            fh.read(1)
        chunks.append((chunk_id, payload))
    return chunks


def _decode(data: bytes, fmt_code: int, bits: int, channels: int) -> np.ndarray:
    if fmt_code == FORMAT_FLOAT and bits == 32:
        flat = np.frombuffer(data, dtype="<f4").astype(np.float32)
    elif fmt_code == FORMAT_PCM and bits == 16:
        flat = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    elif fmt_code == FORMAT_PCM and bits == 24:
        raw = np.frombuffer(data[: len(data) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
        ints = raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        flat = ints.astype(np.float32) / 8388608.0
    else:
        raise WavError(f"unsupported WAV encoding (format {fmt_code}, {bits} bit)")
    length_samples = len(flat) // channels
    return flat[: length_samples * channels].reshape(length_samples, channels).T.copy()


def read_wav(path: str | os.PathLike) -> WavFile:
    """Read a WAV written by `write_wav` (or any PCM16/24 / float32 WAV) with its metadata chunks."""
    with open(path, "rb") as fh:
        chunks = _read_chunks(fh)
    found = dict(chunks)
    if "fmt " not in found:
        raise WavError("no 'fmt ' chunk")
    if "data" not in found:
        raise WavError("no 'data' chunk")
    fmt_code, channels, rate, _, _, bits = struct.unpack("<HHIIHH", found["fmt "][:16])
    if fmt_code == 0xFFFE and len(found["fmt "]) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's first u16
        fmt_code = struct.unpack("<H", found["fmt "][24:26])[0]
    names = {(FORMAT_PCM, 16): "pcm16", (FORMAT_PCM, 24): "pcm24", (FORMAT_FLOAT, 32): "float32"}
    name = names.get((fmt_code, bits), "")
    audio = _decode(found["data"], fmt_code, bits, channels)
    return WavFile(
        audio=audio, sample_rate=rate, sample_format=name,
        acid=AcidInfo.unpack(found["acid"]) if "acid" in found else None,
        bext=BextInfo.unpack(found["bext"]) if "bext" in found else None,
        smpl=SmplInfo.unpack(found["smpl"]) if "smpl" in found else None,
        chunks=[cid for cid, _ in chunks],
    )


def describe(wav: WavFile) -> dict[str, Any]:
    """A JSON-friendly summary (length in samples, rate, tempo, beats, meter, time reference)."""
    out: dict[str, Any] = {"length_samples": wav.length_samples, "sample_rate": wav.sample_rate,
                           "channels": wav.audio.shape[0], "format": wav.sample_format}
    if wav.acid:
        out.update(tempo=wav.acid.tempo, beats=wav.acid.num_beats,
                   meter=f"{wav.acid.meter_num}/{wav.acid.meter_den}", root_note=wav.acid.root_note)
    if wav.bext:
        out["time_reference"] = wav.bext.time_reference
    return out
