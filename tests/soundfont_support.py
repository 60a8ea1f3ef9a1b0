"""A minimal SoundFont 2 file, written byte by byte, so the SoundFont render is tested without an
installed General MIDI set.

The file holds one looped sine sample, one instrument playing it over the whole keyboard, and one
preset (bank 0, program 0) using that instrument: the smallest `sfbk` that a SoundFont 2.01
reader accepts. Layout (all little-endian):

    RIFF 'sfbk'
      LIST 'INFO'  ifil (version 2.1), isng, INAM
      LIST 'sdta'  smpl (16-bit mono samples, then 46 zeros as the format asks)
      LIST 'pdta'  phdr pbag pmod pgen inst ibag imod igen shdr, each list closed by its terminal record
"""

from __future__ import annotations

import math
import struct

SAMPLE_RATE = 44100
PERIOD_SAMPLES = 100  # one cycle of 441 Hz at 44.1 kHz: the loop joins without a click
ROOT_KEY = 69  # the sample plays A4 at its own speed
SAMPLE_HZ = SAMPLE_RATE / PERIOD_SAMPLES

# generator operators (SoundFont 2.01, section 8.1.3)
GEN_INSTRUMENT = 41
GEN_SAMPLE_MODES = 54
GEN_SAMPLE_ID = 53
LOOP_CONTINUOUSLY = 1
MONO_SAMPLE = 1


def _chunk(tag: bytes, data: bytes) -> bytes:
    if len(data) % 2:
        data += b"\0"
    return tag + struct.pack("<I", len(data)) + data


def _list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _name(text: str) -> bytes:
    return text.encode("ascii")[:19].ljust(20, b"\0")


def _zstr(text: str) -> bytes:
    return text.encode("ascii") + b"\0"


def sine_samples(cycles: int = 40, amplitude: float = 0.5) -> list[int]:
    return [int(round(amplitude * 32767 * math.sin(2 * math.pi * i / PERIOD_SAMPLES)))
            for i in range(cycles * PERIOD_SAMPLES)]


def soundfont_bytes(samples: list[int] | None = None) -> bytes:
    samples = samples if samples is not None else sine_samples()
    end = len(samples)
    loop_start, loop_end = end // 2 - (end // 2) % PERIOD_SAMPLES, end  # whole cycles
    info = _list(b"INFO", _chunk(b"ifil", struct.pack("<HH", 2, 1)), _chunk(b"isng", _zstr("EMU8000")),
                 _chunk(b"INAM", _zstr("ace-companion test sine")))
    sdta = _list(b"sdta", _chunk(b"smpl", struct.pack(f"<{end + 46}h", *samples, *([0] * 46))))

    phdr = (struct.pack("<20sHHHIII", _name("Sine"), 0, 0, 0, 0, 0, 0)
            + struct.pack("<20sHHHIII", _name("EOP"), 0, 0, 1, 0, 0, 0))
    pbag = struct.pack("<HH", 0, 0) + struct.pack("<HH", 1, 0)
    pmod = struct.pack("<HHhHH", 0, 0, 0, 0, 0)
    pgen = struct.pack("<HH", GEN_INSTRUMENT, 0) + struct.pack("<HH", 0, 0)
    inst = struct.pack("<20sH", _name("Sine"), 0) + struct.pack("<20sH", _name("EOI"), 1)
    ibag = struct.pack("<HH", 0, 0) + struct.pack("<HH", 2, 0)
    imod = struct.pack("<HHhHH", 0, 0, 0, 0, 0)
    igen = (struct.pack("<HH", GEN_SAMPLE_MODES, LOOP_CONTINUOUSLY)
            + struct.pack("<HH", GEN_SAMPLE_ID, 0)  # sampleID closes the zone
            + struct.pack("<HH", 0, 0))
    shdr = (struct.pack("<20sIIIIIBbHH", _name("Sine"), 0, end, loop_start, loop_end, SAMPLE_RATE, ROOT_KEY, 0, 0,
                        MONO_SAMPLE)
            + struct.pack("<20sIIIIIBbHH", _name("EOS"), 0, 0, 0, 0, 0, 0, 0, 0, 0))
    pdta = _list(b"pdta", _chunk(b"phdr", phdr), _chunk(b"pbag", pbag), _chunk(b"pmod", pmod),
                 _chunk(b"pgen", pgen), _chunk(b"inst", inst), _chunk(b"ibag", ibag), _chunk(b"imod", imod),
                 _chunk(b"igen", igen), _chunk(b"shdr", shdr))
    return _chunk(b"RIFF", b"sfbk" + info + sdta + pdta)


def write_sine_soundfont(path) -> str:
    """Write the one-preset sine SoundFont to `path` and return the path as a string."""
    with open(path, "wb") as fh:
        fh.write(soundfont_bytes())
    return str(path)


def key_hz(key: int) -> float:
    """The pitch this SoundFont plays for MIDI `key` (equal temperament around the sample's root)."""
    return SAMPLE_HZ * 2 ** ((key - ROOT_KEY) / 12)
