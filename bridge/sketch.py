"""Sketch -> part: the musician's MIDI clip becomes a produced part on the grid.

1. Read the notes where they are: REAPER's selected MIDI item(s) through `ace_companion.lua`
   (`read_midi`), Ableton's selected clip over AbletonOSC (`/live/clip/get/notes`), or a .mid
   file given by hand (parsed with mido). Positions are kept in project quarter notes (QN), so
   the host tempo map alone decides where each note sounds.
2. Render the notes to audio at the host tempo map: with a General MIDI SoundFont through
   tinysoundfont when both are installed, else with a plain built-in synth (and a line saying so).
3. The bridge then runs `cover` with the rendered sketch as `src_audio`, the clip's span as the
   region, and puts the result on a new track named "<MIDI track> (ACE)". The MIDI is untouched.

Pure functions here (no threads, no sockets); `run_sketch` is the one entry point the app uses.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.grid import GridError, Region, TempoMap, TempoPoint, seconds_to_samples, snap_region_to_bars, span_samples

log = logging.getLogger(__name__)

SOUNDFONT_ENV = "ACE_COMPANION_SOUNDFONT"
SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "/usr/share/sounds/sf3",
                  "~/.local/share/soundfonts", "~/.local/share/sounds/sf2", "~/.fluidsynth",
                  "/opt/homebrew/share/soundfonts", "/usr/local/share/soundfonts")
# General MIDI sets, best first (Debian: fluid-soundfont-gm, timgm6mb-soundfont).
PREFERRED_SOUNDFONTS = ("FluidR3_GM.sf2", "default-GM.sf2", "TimGM6mb.sf2", "GeneralUser", "MuseScore_General")
DRUM_CHANNEL = 9  # MIDI channel 10
TAIL_S = 0.5  # rendered after the clip's end so releases ring into the context audio
TRACK_SUFFIX = " (ACE)"
BUILTIN_MESSAGE = ("no SoundFont synth: rendering the sketch with the built-in synth (install tinysoundfont and a "
                   "General MIDI SoundFont, e.g. apt install timgm6mb-soundfont, for realistic instruments)")


class SketchError(ValueError):
    """A sketch that cannot be used (no notes, unreadable file, bad reply); the message says why."""


@dataclass(frozen=True)
class SketchNote:
    pitch: int
    start_qn: float  # project quarter notes
    end_qn: float
    velocity: int = 100
    channel: int = 0


@dataclass
class Sketch:
    """Notes of one MIDI clip (or several items of one selection) and the clip's span, in project QN."""

    notes: list[SketchNote]
    start_qn: float
    end_qn: float
    track_name: str = "MIDI"
    programs: dict[int, int] = field(default_factory=dict)  # channel -> GM program (0-based)
    origin: str = ""  # reaper, ableton, or the file path

    def __post_init__(self):
        if not math.isfinite(self.start_qn) or not math.isfinite(self.end_qn) or self.start_qn < 0:
            raise SketchError(f"the MIDI clip span {self.start_qn}..{self.end_qn} beats is not usable")
        if self.end_qn <= self.start_qn:
            raise SketchError(f"the MIDI clip ends ({self.end_qn:g} beats) before it starts ({self.start_qn:g})")
        kept = [n for n in self.notes if n.end_qn > self.start_qn and n.start_qn < self.end_qn]
        if not kept:
            raise SketchError(f"the MIDI clip on '{self.track_name}' has no notes to play")
        self.notes = sorted(kept, key=lambda n: (n.start_qn, n.pitch))

    def region(self, tempo_map: TempoMap, snap: str = "nearest") -> Region:
        """The clip's span in project seconds, on bar lines (unless snap is 'off')."""
        region = Region(tempo_map.qn_to_seconds(self.start_qn), tempo_map.qn_to_seconds(self.end_qn))
        return region if snap == "off" else snap_region_to_bars(region, tempo_map, snap)

    @property
    def part_track_name(self) -> str:
        return f"{self.track_name or 'MIDI'}{TRACK_SUFFIX}"


# ------------------------------------------------------------------ reading: .mid files
def _open_midi(path: str):
    import mido
    if not os.path.isfile(path):
        raise SketchError(f"MIDI file not found: {path}")
    try:
        mid = mido.MidiFile(path)
    except (OSError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise SketchError(f"cannot read MIDI file {path}: {exc}") from None
    if mid.type == 2:
        raise SketchError(f"{path} is a type 2 MIDI file (independent patterns); export it as type 0 or 1")
    return mid


def _timeline(mid) -> list[tuple[int, Any]]:
    """(absolute tick, message) for every track, in time order (mido keeps ticks per track)."""
    events = []
    for order, track in enumerate(mid.tracks):
        tick = 0
        for message in track:
            tick += message.time
            events.append((tick, order, message))
    events.sort(key=lambda e: (e[0], e[1]))
    return [(tick, message) for tick, _, message in events]


def read_midi_file(path: str, start_qn: float = 0.0, track_name: str | None = None) -> Sketch:
    """Notes of a Standard MIDI File, placed so the file's beat 0 is project QN `start_qn`.

    The file's own tempo is ignored: notes keep their musical positions (beats), and the host
    tempo map turns those into time. The span runs from the file's start to the end of its
    last note (snapped to bars later against the host grid).
    """
    mid = _open_midi(path)
    ticks_per_qn = mid.ticks_per_beat
    notes: list[SketchNote] = []
    open_notes: dict[tuple[int, int], list[tuple[int, int]]] = {}
    programs: dict[int, int] = {}
    name = track_name
    for tick, message in _timeline(mid):
        kind = message.type
        if kind == "track_name" and not name and message.name.strip():
            name = message.name.strip()
        elif kind == "program_change":
            programs.setdefault(message.channel, message.program)
        elif kind == "note_on" and message.velocity > 0:
            open_notes.setdefault((message.channel, message.note), []).append((tick, message.velocity))
        elif kind in ("note_off", "note_on"):
            started = open_notes.get((message.channel, message.note))
            if started:
                begin, velocity = started.pop(0)
                if tick > begin:
                    notes.append(SketchNote(message.note, start_qn + begin / ticks_per_qn,
                                            start_qn + tick / ticks_per_qn, velocity, message.channel))
    if not notes:
        raise SketchError(f"{path} has no notes")
    end_qn = max(n.end_qn for n in notes)
    return Sketch(notes, start_qn, end_qn, name or os.path.splitext(os.path.basename(path))[0], programs, path)


def midi_file_tempo_map(path: str) -> TempoMap:
    """The file's own tempo and meter changes, for when no host tempo is known."""
    mid = _open_midi(path)
    ticks_per_qn = mid.ticks_per_beat
    points: dict[float, dict[str, Any]] = {}
    bpm, num, den = 120.0, 4, 4
    for tick, message in _timeline(mid):
        if message.type == "set_tempo":
            bpm = 60_000_000 / message.tempo
        elif message.type == "time_signature":
            num, den = message.numerator, message.denominator
        else:
            continue
        points[tick / ticks_per_qn] = {"bpm": bpm, "num": num, "den": den}
    if not points:
        return TempoMap.constant(bpm, num, den)
    # A change carries the other values as they stood then: fill forward.
    out, state = [], {"bpm": 120.0, "num": 4, "den": 4}
    for qn in sorted(points):
        state = {**state, **points[qn]}
        out.append(TempoPoint(qn, state["bpm"], state["num"], state["den"]))
    return TempoMap(out)


# ------------------------------------------------------------------ reading: DAW replies
def parse_reaper_notes(text: str) -> Sketch:
    """The notes file `ace_companion.lua` writes for `read_midi`:

        track_name=Keys
        start_qn=6
        end_qn=30
        program=<channel> <program>
        note=<start_qn> <end_qn> <pitch> <velocity> <channel>
    """
    fields: dict[str, str] = {}
    notes, programs = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            if key == "note":
                start, end, pitch, velocity, channel = value.split()
                notes.append(SketchNote(int(pitch), float(start), float(end), int(velocity), int(channel)))
            elif key == "program":
                channel, program = value.split()
                programs.setdefault(int(channel), int(program))
            else:
                fields[key] = value.strip()
        except ValueError:
            raise SketchError(f"REAPER's MIDI reply has a bad line {number}: {line!r}") from None
    try:
        start_qn, end_qn = float(fields["start_qn"]), float(fields["end_qn"])
    except (KeyError, ValueError):
        raise SketchError("REAPER's MIDI reply has no clip span (start_qn/end_qn)") from None
    return Sketch(notes, start_qn, end_qn, fields.get("track_name") or "MIDI", programs, "reaper")


def sketch_from_live(values: tuple, clip_start_qn: float, length_qn: float, track_name: str) -> Sketch:
    """AbletonOSC's `/live/clip/get/notes` values (pitch, start, duration, velocity, mute per note,
    in beats from the clip start) placed at project QN `clip_start_qn`."""
    if len(values) % 5:
        raise SketchError(f"Live sent {len(values)} note values, not five per note")
    notes = []
    for i in range(0, len(values), 5):
        pitch, start, duration, velocity, mute = values[i:i + 5]
        if mute or duration <= 0:
            continue
        begin = clip_start_qn + float(start)
        notes.append(SketchNote(int(pitch), begin, begin + float(duration), int(round(velocity))))
    return Sketch(notes, clip_start_qn, clip_start_qn + float(length_qn), track_name or "MIDI", {}, "ableton")


# ------------------------------------------------------------------ rendering
@dataclass
class RenderedSketch:
    audio: np.ndarray  # [2, frames] float32, first sample at project time `start_s`
    sample_rate: int
    start_s: float
    synth: str  # "soundfont:<path>" or "builtin"
    message: str = ""


def find_soundfont(explicit: str | None = None) -> str | None:
    """A General MIDI SoundFont: `explicit`, else $ACE_COMPANION_SOUNDFONT, else the standard folders."""
    for candidate in (explicit, os.environ.get(SOUNDFONT_ENV)):
        if candidate:
            return candidate if os.path.isfile(candidate) else None
    found: list[str] = []
    for folder in SOUNDFONT_DIRS:
        found += sorted(glob.glob(os.path.join(os.path.expanduser(folder), "*.sf[23]")))
    for name in PREFERRED_SOUNDFONTS:
        for path in found:
            if os.path.basename(path).startswith(name):
                return path
    return found[0] if found else None


def _note_events(sketch: Sketch, tempo_map: TempoMap, sample_rate: int, start_s: float, frames: int):
    """(sample offset, pitch, velocity, channel, length in samples) per note, on the render's samples."""
    first = seconds_to_samples(start_s, sample_rate)
    end_qn = sketch.end_qn
    out = []
    for n in sketch.notes:
        a = seconds_to_samples(tempo_map.qn_to_seconds(max(n.start_qn, sketch.start_qn)), sample_rate) - first
        b = seconds_to_samples(tempo_map.qn_to_seconds(min(n.end_qn, end_qn)), sample_rate) - first
        if 0 <= a < frames and b > a:
            out.append((a, n.pitch, n.velocity, n.channel, b - a))
    return out


def render_sketch(sketch: Sketch, tempo_map: TempoMap, sample_rate: int = 48000, soundfont: str | None = None,
                  use_soundfont: bool = True) -> RenderedSketch:
    """Audio of the sketch at the host tempo map: note k starts at project sample
    round(qn_to_seconds(start_qn) * sample_rate). Covers the clip span plus a short tail."""
    start_s = tempo_map.qn_to_seconds(sketch.start_qn)
    end_s = tempo_map.qn_to_seconds(sketch.end_qn) + TAIL_S
    frames = span_samples(start_s, end_s, sample_rate)
    events = _note_events(sketch, tempo_map, sample_rate, start_s, frames)
    path = find_soundfont(soundfont) if use_soundfont else None
    message = ""
    if path is not None:
        try:
            audio = _render_soundfont(path, sketch, events, frames, sample_rate)
            return RenderedSketch(audio, sample_rate, start_s, f"soundfont:{path}", f"sketch rendered with {path}")
        except ImportError:
            message = BUILTIN_MESSAGE
        except Exception as exc:  # a broken SoundFont must not stop the action
            message = f"the SoundFont {path} failed ({exc}); rendering the sketch with the built-in synth"
    elif not use_soundfont:
        message = "SoundFont off: rendering the sketch with the built-in synth"
    elif soundfont:
        message = f"SoundFont {soundfont} not found; rendering the sketch with the built-in synth"
    else:
        message = BUILTIN_MESSAGE
    log.warning(message)
    return RenderedSketch(_render_builtin(events, frames, sample_rate), sample_rate, start_s, "builtin", message)


def _render_soundfont(path: str, sketch: Sketch, events, frames: int, sample_rate: int) -> np.ndarray:
    import tinysoundfont
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(path)
    for channel in sorted({e[3] for e in events}):
        drums = channel == DRUM_CHANNEL
        try:
            synth.program_select(channel, sfid, 128 if drums else 0, 0 if drums else sketch.programs.get(channel, 0),
                                 is_drums=drums)
        except RuntimeError:  # the SoundFont lacks that preset: first one of the bank
            synth.program_select(channel, sfid, 0, 0, is_drums=drums)
    # note-offs first at equal times, so a repeated note re-attacks
    timeline = sorted([(a + length, 0, ch, pitch, 0) for a, pitch, _, ch, length in events]
                      + [(a, 1, ch, pitch, vel) for a, pitch, vel, ch, _ in events])
    out = np.zeros((frames, 2), dtype=np.float32)
    pos = 0
    for sample, is_on, channel, pitch, velocity in timeline:
        sample = min(sample, frames)
        if sample > pos:
            out[pos:sample] = np.frombuffer(synth.generate_simple(sample - pos), dtype=np.float32).reshape(-1, 2)
            pos = sample
        if is_on:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    if frames > pos:
        out[pos:] = np.frombuffer(synth.generate_simple(frames - pos), dtype=np.float32).reshape(-1, 2)
    return _normalise(out.T)


def _render_builtin(events, frames: int, sample_rate: int) -> np.ndarray:
    """Additive tones (six decaying harmonics) with an attack/decay/release envelope; channel 10
    plays noise hits. Plain, but every onset is where the note starts."""
    mono = np.zeros(frames + 1, dtype=np.float32)
    attack = max(1, int(0.004 * sample_rate))
    release = int(0.06 * sample_rate)
    rng = np.random.default_rng(0)
    for a, pitch, velocity, channel, length in events:
        n = min(length + release, frames - a)
        t = np.arange(n, dtype=np.float32) / sample_rate
        gain = 0.25 * (velocity / 127.0)
        if channel == DRUM_CHANNEL:
            tone = rng.standard_normal(n).astype(np.float32) * np.exp(-t * 30.0)
        else:
            hz = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
            tone = np.zeros(n, dtype=np.float32)
            for k in range(1, 7):
                if hz * k < sample_rate / 2:
                    tone += np.sin(2 * np.pi * hz * k * t) / k
            tone *= 0.6 + 0.4 * np.exp(-t * 3.0)
        env = np.ones(n, dtype=np.float32)
        env[:attack] = np.linspace(0.0, 1.0, attack, endpoint=False)[:n]
        if n > length:
            env[length:] *= np.linspace(1.0, 0.0, n - length)
        mono[a:a + n] += gain * tone * env
    return _normalise(np.stack([mono[:frames], mono[:frames]]))


def _normalise(audio: np.ndarray, peak: float = 0.8) -> np.ndarray:
    """Peak at -2 dBFS: SoundFonts render quietly, and the model hears level."""
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    if top > 0:
        audio = audio * (peak / top)
    return np.ascontiguousarray(audio, dtype=np.float32)


# ------------------------------------------------------------------ reading from the DAW
def read_live_clip(adapter: Any, region_qn: tuple[float, float] | None, timeout_s: float = 5.0) -> Sketch:
    """The selected Session clip's notes over AbletonOSC, placed at the loop brace's start
    (Live's clips have no arrangement position in the API; the brace says where the part goes)."""
    from bridge.adapters import AdapterError
    track, scene = (int(v) for v in adapter.query("/live/view/get/selected_clip", timeout_s=timeout_s)[:2])
    try:
        notes = adapter.query("/live/clip/get/notes", track, scene, timeout_s=timeout_s, match=(track, scene))[2:]
        length = adapter.query("/live/clip/get/length", track, scene, timeout_s=timeout_s, match=(track, scene))[2]
        name = adapter.query("/live/track/get/name", track, timeout_s=timeout_s, match=(track,))[1]
    except AdapterError:
        raise SketchError(f"Live sent no notes for the selected clip (track {track + 1}, scene {scene + 1}): "
                          "select a MIDI clip in Session view") from None
    return sketch_from_live(tuple(notes), region_qn[0] if region_qn else 0.0, float(length), str(name))


def read_from_daw(app: Any, timeout_s: float = 15.0) -> Sketch:
    """Ask the connected DAW that can read MIDI (REAPER's script, or AbletonOSC) for the sketch."""
    from bridge.adapters import AdapterError
    adapters = [a for a in app.adapters.values() if a.status().get("connected")
                and (hasattr(a, "read_midi") or hasattr(a, "query"))]
    adapters.sort(key=lambda a: a.status().get("last_seen") or 0, reverse=True)
    if not adapters:
        raise SketchError("no DAW connected to read MIDI from: select a MIDI item in REAPER (with ace_companion.lua "
                          "running) or a MIDI clip in Live, or give a .mid file (/acecomp/sketch midi_path <file>)")
    adapter = adapters[0]
    try:
        if hasattr(adapter, "read_midi"):
            dest = os.path.join(app.config.work_folder, f"notes-{uuid.uuid4().hex[:10]}.txt")
            return parse_reaper_notes(adapter.read_midi(dest, timeout_s=timeout_s))
        return read_live_clip(adapter, app.host_state.region_beats(), timeout_s=min(timeout_s, 5.0))
    except AdapterError as exc:
        raise SketchError(str(exc)) from None


# ------------------------------------------------------------------ the action
SKETCH_KEYS = ("midi_path", "soundfont", "follow")


def run_sketch(app: Any, overrides: dict[str, Any] | None = None, notify: Any = None) -> str:
    """Sketch -> part: read the MIDI, render it, and start `cover` on its span with the rendered
    sketch as source; the part goes on a new track "<MIDI track> (ACE)". Returns the job id.

    Settings besides the usual request fields: `midi_path` (a .mid file instead of the DAW's
    clip), `soundfont` (a .sf2 path, or "none" for the built-in synth), `follow` (0-1, how
    closely the part follows the sketch: the request's `audio_cover_strength`).
    """
    from bridge.clips import ENGINE_SAMPLE_RATE, write_context
    from bridge.errors import BridgeError
    overrides = dict(overrides or {})
    midi_path = overrides.pop("midi_path", None)
    soundfont = overrides.pop("soundfont", None)
    follow = overrides.pop("follow", None)
    if follow is not None:
        try:
            overrides["audio_cover_strength"] = float(follow)
        except (TypeError, ValueError):
            raise BridgeError(f"follow {follow!r} must be a number from 0 (only the form) to 1 (the notes)") from None
    tempo_map = app.host_state.tempo_map()
    try:
        if midi_path:
            midi_path = os.path.expanduser(str(midi_path))
            if tempo_map is None:  # no DAW said anything: the file's own tempo map is the grid
                tempo_map = midi_file_tempo_map(midi_path)
                app.host_state.update("midi-file", fallback=True, tempo_map=[
                    {k: p[k] for k in ("qn", "bpm", "num", "den")} for p in tempo_map.to_list()])
            start_qn = 0.0
            region = app.host_state.region()
            if region is not None:  # the file lands on the bar where the selection starts
                start_qn = tempo_map.bar_to_qn(round(tempo_map.seconds_to_bar(region.start_s)))
            sketch = read_midi_file(midi_path, start_qn)
            # a file's span ends with its last note: round up to the bar line, never cut a note
            sketch.end_qn = tempo_map.bar_to_qn(math.ceil(tempo_map.qn_to_bar(sketch.end_qn) - 1e-6))
        else:
            if tempo_map is None:
                raise BridgeError("the host tempo is unknown: start the DAW adapter, or send /acecomp/tempo <bpm>")
            sketch = read_from_daw(app, timeout_s=app.config.render_timeout_s)
        region = sketch.region(tempo_map, overrides.get("snap", app.config.snap))
    except (SketchError, GridError) as exc:
        raise BridgeError(str(exc)) from None
    rendered = render_sketch(sketch, tempo_map, ENGINE_SAMPLE_RATE, None if soundfont == "none" else soundfont,
                             use_soundfont=soundfont != "none")
    app._emit({"type": "sketch", "message": rendered.message, "synth": rendered.synth, "notes": len(sketch.notes),
               "track_name": sketch.track_name, "start_s": region.start_s, "end_s": region.end_s}, notify)
    os.makedirs(app.config.work_folder, exist_ok=True)
    path = write_context(os.path.join(app.config.work_folder, f"sketch-{uuid.uuid4().hex[:10]}.wav"), rendered.audio,
                         rendered.sample_rate)
    cover = {**overrides, "region": [region.start_s, region.end_s], "snap": "off", "source_file": path,
             "source_offset_s": rendered.start_s, "insert": "new_track", "track_name": sketch.part_track_name}
    try:
        return app.run_action("cover", cover, notify)
    finally:
        try:  # run_action has cut and uploaded the context by now
            os.remove(path)
        except OSError:
            pass
