"""Sketch -> part: MIDI (file, REAPER item, Live clip) -> rendered sketch -> cover -> a clip of the
MIDI clip's exact span on a new "<track> (ACE)" track."""

import sys

import mido
import numpy as np
import pytest

from bridge.app import BridgeApp
from bridge.config import BridgeConfig
from bridge.grid import TempoMap, TempoPoint
from bridge.sketch import (
    BUILTIN_MESSAGE,
    Sketch,
    SketchError,
    SketchNote,
    find_soundfont,
    midi_file_tempo_map,
    parse_reaper_notes,
    read_midi_file,
    render_sketch,
    sketch_from_live,
)
from bridge.wavchunks import read_wav
from simulators import wait_for
from simulators.ableton import SimulatedAbletonOSC
from simulators.osc import OscPeer, free_udp_port
from simulators.pipelines import echo_engine
from simulators.reaper import SimulatedReaper
from tests.soundfont_support import key_hz, write_sine_soundfont

HOST_SR = 44100
# The fixture's grid: 96 BPM in 3/4, then 120 BPM from bar 5 (quarter note 12).
HOST_MAP = TempoMap([TempoPoint(0.0, 96.0, 3, 4), TempoPoint(12.0, 120.0, 3, 4)])
NOTE_QN = [0.0, 1.0, 2.0, 3.5, 6.0, 9.0, 12.0, 13.0, 15.0, 16.5, 18.0, 21.0]  # across the tempo change


def write_fixture(path, start_ticks=0, ticks_per_beat=480):
    """A .mid file made with mido: 96 BPM, 3/4, a change to 120 BPM at bar 5, short piano notes."""
    mid = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    meta = mido.MidiTrack()
    meta += [mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(96), time=0),
             mido.MetaMessage("time_signature", numerator=3, denominator=4, time=0),
             mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120), time=12 * ticks_per_beat)]
    notes = mido.MidiTrack()
    notes.append(mido.MetaMessage("track_name", name="Keys", time=0))
    notes.append(mido.Message("program_change", program=0, channel=0, time=0))
    events = []
    for i, qn in enumerate(NOTE_QN):
        on = start_ticks + int(qn * ticks_per_beat)
        events += [(on, 1, 60 + i), (on + ticks_per_beat // 4, 0, 60 + i)]
    now = 0
    for tick, is_on, pitch in sorted(events, key=lambda e: (e[0], e[1])):
        kind = "note_on" if is_on else "note_off"
        notes.append(mido.Message(kind, note=pitch, velocity=100 if is_on else 0, time=tick - now))
        now = tick
    mid.tracks += [meta, notes]
    mid.save(path)
    return path


def onsets(audio, threshold=0.02, quiet_samples=2000):
    """Sample indices where the signal rises above `threshold` after at least `quiet_samples` of quiet."""
    level = np.abs(audio).max(axis=0)
    loud = np.flatnonzero(level > threshold)
    if not len(loud):
        return []
    starts = [loud[0]] + [b for a, b in zip(loud, loud[1:]) if b - a > quiet_samples]
    return [int(s) for s in starts]


def expected_onsets(start_qn, sample_rate, tempo_map=HOST_MAP, offsets=NOTE_QN):
    first = round(tempo_map.qn_to_seconds(start_qn) * sample_rate)
    return [round(tempo_map.qn_to_seconds(start_qn + qn) * sample_rate) - first for qn in offsets]


# ------------------------------------------------------------------ reading
def test_midi_file_reads_notes_in_beats_and_its_tempo_map(tmp_path):
    path = write_fixture(str(tmp_path / "sketch.mid"))
    sketch = read_midi_file(path, start_qn=6.0)
    assert sketch.track_name == "Keys" and sketch.programs == {0: 0}
    assert [n.start_qn for n in sketch.notes] == [6.0 + qn for qn in NOTE_QN]
    assert all(n.end_qn - n.start_qn == pytest.approx(0.25) for n in sketch.notes)
    assert sketch.start_qn == 6.0 and sketch.end_qn == pytest.approx(6.0 + 21.25)
    file_map = midi_file_tempo_map(path)
    assert [(p.qn, round(p.bpm, 3), p.num, p.den) for p in file_map.points] == [(0.0, 96.0, 3, 4), (12.0, 120.0, 3, 4)]
    # the clip span is snapped to whole bars of the host grid
    region = sketch.region(HOST_MAP)
    assert HOST_MAP.seconds_to_bar(region.start_s) == pytest.approx(2)
    assert HOST_MAP.seconds_to_bar(region.end_s) == pytest.approx(9)


def test_bad_midi_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not midi at all")
    with pytest.raises(SketchError, match="cannot read MIDI file"):
        read_midi_file(str(bad))
    with pytest.raises(SketchError, match="not found"):
        read_midi_file(str(tmp_path / "missing.mid"))
    empty = mido.MidiFile()
    empty.tracks.append(mido.MidiTrack())
    empty.save(tmp_path / "empty.mid")
    with pytest.raises(SketchError, match="no notes"):
        read_midi_file(str(tmp_path / "empty.mid"))
    with pytest.raises(SketchError, match="bad line 3"):
        parse_reaper_notes("start_qn=0\nend_qn=4\nnote=0 1 sixty 100 0\n")
    with pytest.raises(SketchError, match="no clip span"):
        parse_reaper_notes("note=0 1 60 100 0\n")
    with pytest.raises(SketchError, match="five per note"):
        sketch_from_live((60, 0.0, 1.0, 100), 0.0, 4.0, "Bass")
    with pytest.raises(SketchError, match="no notes to play"):
        sketch_from_live((60, 0.0, 1.0, 100, 1), 0.0, 4.0, "Bass")  # only a muted note


def test_reaper_and_live_note_formats():
    sketch = parse_reaper_notes("track_name=Keys\nstart_qn=6\nend_qn=30\nprogram=0 33\n"
                                "note=6.5 7 40 90 0\nnote=29.5 31 43 80 0\nnote=40 41 45 80 0\n")
    assert sketch.track_name == "Keys" and sketch.programs == {0: 33} and sketch.part_track_name == "Keys (ACE)"
    assert [(n.pitch, n.start_qn) for n in sketch.notes] == [(40, 6.5), (43, 29.5)]  # outside the span: dropped
    live = sketch_from_live((36, 0.0, 0.5, 100, 0, 38, 1.0, 0.5, 90.0, 0), 12.0, 6.0, "Drums")
    assert [(n.pitch, n.start_qn, n.end_qn, n.velocity) for n in live.notes] == [(36, 12.0, 12.5, 100),
                                                                                (38, 13.0, 13.5, 90)]
    assert (live.start_qn, live.end_qn) == (12.0, 18.0)


# ------------------------------------------------------------------ rendering
@pytest.mark.parametrize("sample_rate", [HOST_SR, 48000])
def test_builtin_render_onsets_fall_on_the_notes_at_the_host_tempo_map(tmp_path, sample_rate):
    sketch = read_midi_file(write_fixture(str(tmp_path / "s.mid")), start_qn=6.0)
    rendered = render_sketch(sketch, HOST_MAP, sample_rate, use_soundfont=False)
    assert rendered.synth == "builtin" and "built-in synth" in rendered.message
    assert rendered.start_s == pytest.approx(HOST_MAP.qn_to_seconds(6.0))
    found = onsets(rendered.audio)
    expected = expected_onsets(6.0, sample_rate)
    assert len(found) == len(expected)
    # the attack starts on the note's sample; the level crosses the threshold within 2 ms
    assert all(0 <= f - e <= 0.002 * sample_rate for f, e in zip(found, expected)), list(zip(found, expected))


def test_soundfont_render_onsets_fall_on_the_notes(tmp_path):
    import tinysoundfont  # noqa: F401  (installed by .ci/run; without it this test must fail, not fall back)

    soundfont = write_sine_soundfont(tmp_path / "sine.sf2")  # one looped sine preset, written by the test
    sketch = read_midi_file(write_fixture(str(tmp_path / "s.mid")), start_qn=6.0)
    rendered = render_sketch(sketch, HOST_MAP, HOST_SR, soundfont=soundfont)
    assert rendered.synth == f"soundfont:{soundfont}", rendered.message
    found = onsets(rendered.audio, threshold=0.05)
    expected = expected_onsets(6.0, HOST_SR)
    assert len(found) == len(expected)
    assert all(0 <= f - e <= 0.01 * HOST_SR for f, e in zip(found, expected)), list(zip(found, expected))
    # what sounds is the SoundFont's sample, transposed to the note: the first note (key 60) at its pitch
    note = rendered.audio[0, expected[0]:expected[0] + HOST_SR // 8]
    spectrum = np.abs(np.fft.rfft(note * np.hanning(len(note)), n=HOST_SR))  # 1 Hz bins
    assert abs(int(np.argmax(spectrum)) - key_hz(60)) < 3


def test_missing_soundfont_falls_back_with_a_message(tmp_path, monkeypatch):
    sketch = Sketch([SketchNote(60, 0.0, 1.0)], 0.0, 3.0, "Keys")
    rendered = render_sketch(sketch, HOST_MAP, HOST_SR, soundfont=str(tmp_path / "nope.sf2"))
    assert rendered.synth == "builtin" and "nope.sf2 not found" in rendered.message
    monkeypatch.setenv("ACE_COMPANION_SOUNDFONT", str(tmp_path / "gone.sf2"))
    assert find_soundfont() is None
    rendered = render_sketch(sketch, HOST_MAP, HOST_SR)
    assert rendered.synth == "builtin" and rendered.message == BUILTIN_MESSAGE
    # a SoundFont but no tinysoundfont module: also the built-in synth, with the same line
    fake = tmp_path / "gm.sf2"
    fake.write_bytes(b"RIFF")
    monkeypatch.setenv("ACE_COMPANION_SOUNDFONT", str(fake))
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)
    rendered = render_sketch(sketch, HOST_MAP, HOST_SR)
    assert rendered.synth == "builtin" and rendered.message == BUILTIN_MESSAGE
    assert np.abs(rendered.audio).max() > 0.1


# ------------------------------------------------------------------ REAPER script (Lua, mock REAPER)
def test_lua_read_midi_writes_the_selected_items_notes_in_project_beats(tmp_path):
    from tests.reaper_lua import mock_reaper, start_script

    lua, mock = mock_reaper(tmp_path / "mailbox")
    # MIDI take API on top of the mock: one item on "Keys", 2 s = 3.2 QN at 96 BPM, 960 PPQ per QN
    lua.execute("""
      local keys = mock.tracks[2]
      local item = reaper.AddMediaItemToTrack(keys)
      item.D_POSITION, item.D_LENGTH, item.selected = 3.75, 15.0, true
      item.take = { midi = true, ppq0 = 6 * 960,
        notes = { {false, 0, 480, 0, 60, 100}, {true, 960, 1440, 0, 62, 90}, {false, 23 * 960, 25 * 960, 1, 64, 80} },
        ccs = { {false, 0, 0xC0, 0, 33, 0} } }
      function reaper.CountSelectedMediaItems(_) local n = 0
        for _, t in ipairs(mock.tracks) do for _, it in ipairs(t.items) do if it.selected then n = n + 1 end end end
        return n end
      function reaper.GetSelectedMediaItem(_, i) local n = 0
        for _, t in ipairs(mock.tracks) do for _, it in ipairs(t.items) do
          if it.selected then if n == i then return it end n = n + 1 end end end end
      function reaper.GetActiveTake(item) return item.take end
      function reaper.TakeIsMIDI(take) return take.midi end
      function reaper.GetMediaItem_Track(item) return item.track end
      function reaper.TimeMap2_timeToQN(_, t) return t * 96 / 60 end
      function reaper.MIDI_CountEvts(take) return true, #take.notes, #take.ccs, 0 end
      function reaper.MIDI_GetNote(take, i) local n = take.notes[i + 1]
        return true, false, n[1], n[2], n[3], n[4], n[5], n[6] end
      function reaper.MIDI_GetCC(take, i) local c = take.ccs[i + 1]
        return true, false, c[1], c[2], c[3], c[4], c[5], c[6] end
      function reaper.MIDI_GetProjQNFromPPQPos(take, ppq) return (take.ppq0 + ppq) / 960 end
    """)
    start_script(lua)
    from bridge.reaper.adapter import ReaperMailbox
    box = ReaperMailbox(str(tmp_path / "mailbox"))
    dest = tmp_path / "notes.txt"
    cmd_id = box.send("read_midi", path=str(dest))
    mock.now = mock.now + 0.2
    mock.deferred()
    assert box.wait(cmd_id, timeout_s=1) == {"ok": "1", "path": str(dest)}
    sketch = parse_reaper_notes(dest.read_text())
    assert sketch.track_name == "Keys" and sketch.programs == {0: 33}
    assert (sketch.start_qn, sketch.end_qn) == (pytest.approx(6.0), pytest.approx(30.0))
    # the muted note is left out; the last note is cut at the item's end
    assert [(n.pitch, n.start_qn, n.end_qn, n.channel) for n in sketch.notes] == [
        (60, 6.0, 6.5, 0), (64, 29.0, pytest.approx(30.0), 1)]
    # no item selected: the MIDI items under the time selection (3.75-11.25 s), cut to it
    mock.tracks[2]["items"][1].selected = False
    mock.sel = lua.eval("{ 3.75, 11.25 }")
    cmd_id = box.send("read_midi", path=str(dest))
    mock.now = mock.now + 0.2
    mock.deferred()
    assert box.wait(cmd_id, timeout_s=1)["ok"] == "1"
    sketch = parse_reaper_notes(dest.read_text())
    assert (sketch.start_qn, sketch.end_qn) == (pytest.approx(6.0), pytest.approx(18.0))
    assert [n.pitch for n in sketch.notes] == [60]
    # nothing selected and no MIDI in the time selection: a clear error
    mock.tracks[2]["items"][1].take.midi = False
    cmd_id = box.send("read_midi", path=str(dest))
    mock.now = mock.now + 0.2
    mock.deferred()
    assert "no MIDI item selected" in box.wait(cmd_id, timeout_s=1)["error"]


# ------------------------------------------------------------------ whole flows (echo engine: cover = -source)
class ReaperWithMidi(SimulatedReaper):
    """The simulated REAPER plus the script's `read_midi`: one MIDI item on track "Keys"."""

    item_qn = (6.0, 27.0)  # bars 3-9 of 3/4
    notes = [(6.0 + qn, 6.25 + qn, 60 + i, 100, 0) for i, qn in enumerate(NOTE_QN[:-1])]

    def _read_midi(self, cmd):
        lines = ["track_name=Keys", f"start_qn={self.item_qn[0]}", f"end_qn={self.item_qn[1]}"]
        lines += [f"note={a} {b} {p} {v} {c}" for a, b, p, v, c in self.notes]
        with open(cmd["path"], "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return f"ok=1\npath={cmd['path']}\n"

    def set_tempo_map(self):
        self.send("/tempo/raw", 96.0)
        self.state.update(tempo=96, meter="3/4")
        self.markers = ["0 96 3 4", f"{HOST_MAP.qn_to_seconds(12.0):.9f} 120 3 4"]
        self.write_state()


@pytest.fixture
def reaper_sketch(tmp_path):
    with echo_engine(tmp_path) as engine:
        config = BridgeConfig(engine_url=engine.url, host="reaper", osc_port=0, reaper_listen_port=0,
                              reaper_mailbox=str(tmp_path / "mailbox"), output_dir=str(tmp_path / "clips"),
                              request_defaults={"caption": "warm rhodes"}, render_timeout_s=5, insert_timeout_s=5)
        app = BridgeApp(config)
        app.start()
        reaper = ReaperWithMidi(config.reaper_mailbox, app.adapters["reaper"].listen_port, HOST_SR)
        reaper.set_tempo_map()
        wait_for(lambda: app.host_state.get("sample_rate") == HOST_SR and app.host_state.get("tempo_map")
                   and len(app.host_state.get("tempo_map")) == 2)
        client = OscPeer()
        try:
            yield app, reaper, client, engine
        finally:
            client.close()
            reaper.close()
            app.stop()


def _clip_of_span(path, start_qn, end_qn, tempo_map=HOST_MAP):
    wav = read_wav(path)
    a, b = tempo_map.qn_to_seconds(start_qn), tempo_map.qn_to_seconds(end_qn)
    assert wav.sample_rate == HOST_SR and wav.length_samples == round(b * HOST_SR) - round(a * HOST_SR)
    assert wav.bext.time_reference == round(a * HOST_SR)
    assert wav.acid.tempo == pytest.approx(96) and (wav.acid.meter_num, wav.acid.meter_den) == (3, 4)
    return wav


def test_reaper_midi_item_becomes_a_part_on_a_new_track(reaper_sketch):
    app, reaper, client, engine = reaper_sketch
    client.send(app.commands.port, "/acecomp/sketch", '{"follow": 0.6, "seed": 5, "soundfont": "none"}')
    line = client.wait_for("/acecomp/sketch")
    assert line[0] == "builtin" and "built-in synth" in line[1]
    result = client.wait_for("/acecomp/result")
    assert result[3] == 1, result
    assert client.wait_for("/acecomp/done")[1] == "done"
    request = engine.pipeline.requests[0]
    assert request.task_type == "cover" and request.audio_cover_strength == pytest.approx(0.6)
    assert request.caption == "warm rhodes" and request.bpm == 96 and request.timesignature == "3"
    assert request.keyscale == "A minor" and not reaper.renders  # the sketch is the source, not the mix
    insert = reaper.inserted[0]
    assert insert["new_track"] and insert["track_name"] == "Keys (ACE)" and not insert["replace"]
    assert insert["position"] == pytest.approx(HOST_MAP.qn_to_seconds(6.0))
    wav = _clip_of_span(result[1], 6.0, 27.0)
    # the echo engine returns the source negated: the part's onsets are the notes' onsets (within the
    # attack plus the clip's 10 ms edge fade)
    found = onsets(-wav.audio, threshold=0.05)
    expected = expected_onsets(6.0, HOST_SR, offsets=NOTE_QN[:-1])
    assert len(found) == len(expected) and all(0 <= f - e <= 0.005 * HOST_SR for f, e in zip(found, expected))


def test_reaper_dropped_midi_file_lands_on_the_selection_bar(reaper_sketch, tmp_path):
    app, reaper, client, engine = reaper_sketch
    reaper.select(HOST_MAP.qn_to_seconds(3.2), HOST_MAP.qn_to_seconds(20.0))  # starts inside bar 2: nearest is bar 2
    wait_for(lambda: app.host_state.region() is not None)
    path = write_fixture(str(tmp_path / "sketch.mid"))
    job_id = app.run_action("sketch", {"midi_path": path, "soundfont": "none"})
    record = app.wait_action(app.action_for_job(job_id).id)
    assert record.state == "done", record.error
    assert reaper.inserted[0]["track_name"] == "Keys (ACE)"
    _clip_of_span(record.clips[0]["path"], 3.0, 27.0)  # bar 2 to the bar after the last note (bar 9)


def test_sketch_errors_are_clear_and_the_bridge_stays_up(reaper_sketch, tmp_path, monkeypatch):
    app, reaper, client, engine = reaper_sketch
    # over OSC a .mid must lie where sources may come from (refused before looking)
    client.send(app.commands.port, "/acecomp/sketch", "midi_path", "/etc/passwd")
    assert "outside the folders" in client.wait_for("/acecomp/error")[1]
    monkeypatch.setenv("ACE_COMPANION_SOURCE_DIRS", str(tmp_path / "sketches"))
    client.send(app.commands.port, "/acecomp/sketch", "midi_path", str(tmp_path / "sketches" / "missing.mid"))
    assert client.wait_for("/acecomp/error", predicate=lambda a: "MIDI file not found" in a[1])
    client.send(app.commands.port, "/acecomp/sketch", "follow", "lots")
    assert client.wait_for("/acecomp/error", predicate=lambda a: "follow" in a[1])
    client.send(app.commands.port, "/acecomp/ping")
    client.wait_for("/acecomp/pong")


class LiveWithClip(SimulatedAbletonOSC):
    """The simulated AbletonOSC plus the clip getters: a selected MIDI clip on track 2 ("Synth")."""

    clip_notes = (48, 0.0, 0.5, 100, 0, 55, 1.5, 0.5, 100, 0, 52, 3.0, 1.0, 90.0, 0, 50, 7.5, 0.25, 80, 0,
                  60, 5.0, 0.5, 80, 1)  # the last one is muted

    def _handle(self, sender, address, *args):
        if address == "/live/view/get/selected_clip":
            return self._reply(sender, address, 1, 0)
        if address == "/live/clip/get/notes":
            return self._reply(sender, address, args[0], args[1], *self.clip_notes)
        if address == "/live/clip/get/length":
            return self._reply(sender, address, args[0], args[1], 9.0)
        if address == "/live/track/get/name":
            return self._reply(sender, address, args[0], self.song.tracks[args[0]].name)
        return super()._handle(sender, address, *args)


def test_ableton_clip_notes_become_a_part_at_the_loop_brace(tmp_path):
    listen = free_udp_port()
    clips = tmp_path / "clips"
    live = LiveWithClip(reply_port=listen, allowed_root=str(clips))
    with echo_engine(tmp_path) as engine:
        config = BridgeConfig(engine_url=engine.url, host="ableton", osc_port=0, ableton_port=live.port,
                              ableton_listen_port=listen, ableton_insert_port=live.insert_port,
                              output_dir=str(clips), project="Live Set")
        app = BridgeApp(config)
        app.start()
        try:
            wait_for(lambda: app.adapters_status()["ableton"]["connected"] and app.host_state.region() is not None
                       and app.host_state.get("meter") == (3, 4))
            job_id = app.run_action("sketch", {"soundfont": "none"})
            record = app.wait_action(app.action_for_job(job_id).id)
            assert record.state == "done", record.error
            request = engine.pipeline.requests[0]
            assert request.task_type == "cover" and request.bpm == 96 and request.keyscale == "A minor"
            new_track = live.song.tracks[-1]
            assert new_track.name == "Synth (ACE)"
            clip = new_track.arrangement_clips[0]
            assert clip.start_time == pytest.approx(6.0) and clip.warping is False  # the loop brace's start
            live_map = TempoMap.constant(96, 3, 4)
            wav = _clip_of_span(clip.file_path, 6.0, 15.0, live_map)  # the clip's 9 beats = 3 bars
            found = onsets(-wav.audio, threshold=0.05)
            expected = expected_onsets(6.0, HOST_SR, live_map, [0.0, 1.5, 3.0, 7.5])
            assert len(found) == 4 and all(0 <= f - e <= 0.005 * HOST_SR for f, e in zip(found, expected))
        finally:
            app.stop()
            live.close()
