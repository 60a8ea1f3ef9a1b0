import random
import sys

import mido
import pytest

from bridge.host_state import HostState
from bridge.midi import MidiAdapter, MidiClock, MidiListener, MidiUnavailable, parse_mapping


def clocks(bpm, count, start=0.0, jitter_s=0.0, seed=1):
    rng = random.Random(seed)
    interval = 60.0 / (24 * bpm)
    return [(mido.Message("clock"), start + i * interval + rng.uniform(-jitter_s, jitter_s)) for i in range(count)]


def feed(clock, messages):
    for message, t in messages:
        clock.feed(message, t)


def test_steady_clock_gives_tempo():
    clock = MidiClock()
    feed(clock, clocks(120, 96))
    assert clock.bpm == pytest.approx(120, abs=1e-6)


def test_jittery_clock_is_smoothed():
    clock = MidiClock()
    feed(clock, clocks(96, 24 * 16, jitter_s=0.001))
    assert clock.bpm == pytest.approx(96, abs=0.3)
    # one interval alone would be far off: 1 ms jitter on a 26 ms tick
    single = 60 / (24 * (60 / (24 * 96) + 0.002))
    assert abs(single - 96) > 5


def test_tempo_change_is_followed_quickly():
    clock = MidiClock()
    msgs = clocks(100, 96)
    feed(clock, msgs)
    feed(clock, clocks(140, 96, start=msgs[-1][1] + 60 / (24 * 140)))
    assert clock.bpm == pytest.approx(140, abs=0.5)


def test_gap_resets_the_estimate():
    clock = MidiClock(max_gap_s=0.5)
    feed(clock, clocks(90, 48))
    feed(clock, clocks(150, 48, start=100.0))  # a long pause, then a new tempo
    assert clock.bpm == pytest.approx(150, abs=1e-6)


def test_position_from_start_and_song_position_pointer():
    clock = MidiClock()
    clock.feed(mido.Message("start"), 0.0)
    feed(clock, clocks(120, 48, start=0.01))
    assert clock.playing and clock.position_qn == pytest.approx(2.0)
    clock.feed(mido.Message("stop"), 2.0)
    feed(clock, clocks(120, 24, start=2.1))  # clock keeps running while stopped: position holds
    assert not clock.playing and clock.position_qn == pytest.approx(2.0)
    clock.feed(mido.Message("songpos", pos=32), 3.0)  # 32 sixteenths = 8 quarter notes
    assert clock.position_qn == pytest.approx(8.0)
    clock.feed(mido.Message("continue"), 3.1)
    feed(clock, clocks(120, 12, start=3.2))
    assert clock.position_qn == pytest.approx(8.5)
    assert clock.feed(mido.Message("note_on", note=60), 4.0) is False


def test_mappings_parse_and_match():
    m = parse_mapping("note:60=repaint")
    assert m.matches(mido.Message("note_on", note=60, velocity=90))
    assert not m.matches(mido.Message("note_on", note=60, velocity=0))  # note-off in disguise
    assert not m.matches(mido.Message("note_on", note=61, velocity=90))
    cc = parse_mapping("CC 20 @ 2 = generate")
    assert cc.channel == 2 and cc.matches(mido.Message("control_change", channel=1, control=20, value=127))
    assert not cc.matches(mido.Message("control_change", channel=0, control=20, value=127))
    assert not cc.matches(mido.Message("control_change", channel=1, control=20, value=10))
    for bad in ("note:128=repaint", "note=repaint", "cc:1@17=stems", "note:1=dance"):
        with pytest.raises(ValueError):
            parse_mapping(bad, ("repaint", "stems"))


def test_listener_publishes_as_fallback_and_fires_actions():
    state = HostState()
    fired = []
    listener = MidiListener(state, [parse_mapping("note:36=stems")], on_action=fired.append, publish_s=0)
    listener.handle(mido.Message("start"), 0.0)
    for message, t in clocks(110, 48, start=0.01):
        listener.handle(message, t)
    assert state.get("tempo") == pytest.approx(110, abs=0.01) and state.get("playing") is True
    assert state.field("tempo").source == "midi"
    listener.handle(mido.Message("note_on", note=36, velocity=100), 3.0)
    assert fired == ["stems"]
    state.update("reaper", tempo=96.0)  # a DAW adapter speaks: MIDI no longer overrides it
    listener.handle(mido.Message("stop"), 3.1)
    assert state.get("tempo") == 96.0


def test_missing_backend_is_a_clear_error(monkeypatch):
    # a machine without python-rtmidi, whether or not this one has it
    monkeypatch.setitem(sys.modules, "rtmidi", None)
    monkeypatch.delitem(sys.modules, "mido.backends.rtmidi", raising=False)
    monkeypatch.setattr(mido, "backend", mido.Backend("mido.backends.rtmidi", load=False))
    adapter = MidiAdapter(MidiListener(HostState()), "whatever")
    with pytest.raises(MidiUnavailable, match="python-rtmidi"):
        adapter.start()
