"""Ableton pieces: AbletonOSC state over loopback UDP, the AceCompanion insert Remote Script."""

import os

import pytest
from pythonosc.osc_message import OscMessage

from bridge.ableton.AceCompanion.insert_server import (
    InsertServer,
    decode_message,
    encode_message,
    load_allowed_roots,
    path_problem,
)
from bridge.ableton.adapter import AbletonAdapter, key_from_live
from bridge.adapters import AdapterError
from bridge.host_state import HostState
from simulators import wait_for
from simulators.ableton import FakeSong, SimulatedAbletonOSC
from simulators.osc import free_udp_port, osc_bytes


def test_key_from_live():
    assert key_from_live(9, "Minor") == "A minor"
    assert key_from_live(1, "Major") == "C# major"
    assert key_from_live(2, "Dorian") == "D minor"
    assert key_from_live(0, "Whole Tone") is None
    assert key_from_live(12, "Major") is None


def test_osc_codec_matches_python_osc():
    address, args = decode_message(osc_bytes("/acecomp/live/insert", "r1", 3, "/a b.wav", 6.5, 0, "x"))
    assert address == "/acecomp/live/insert" and args == ["r1", 3, "/a b.wav", 6.5, 0, "x"]
    message = OscMessage(encode_message("/acecomp/live/inserted", ["r1", "ok", "", 2, 1.5]))
    assert message.address == "/acecomp/live/inserted" and message.params == ["r1", "ok", "", 2, 1.5]
    with pytest.raises(ValueError):
        decode_message(b"nope\x00\x00\x00\x00")


def test_path_safety(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    good = root / "a.wav"
    good.write_bytes(b"RIFF")
    roots = [str(root)]
    assert path_problem(str(good), roots) is None
    assert "absolute" in path_problem("a.wav", roots)
    assert "outside" in path_problem("/etc/passwd", roots)
    assert "outside" in path_problem(str(root / ".." / "a.wav"), roots)
    (root / "notes.txt").write_text("x")
    assert "not an audio file" in path_problem(str(root / "notes.txt"), roots)
    assert "does not exist" in path_problem(str(root / "b.wav"), roots)
    link = root / "sneaky.wav"
    os.symlink("/etc/hostname", link)
    assert "outside" in path_problem(str(link), roots)


def test_allowed_roots_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ACE_COMPANION_OUTPUT", str(tmp_path / "a"))
    (tmp_path / "allowed_roots.txt").write_text("# comment\n" + str(tmp_path / "b") + "\n")
    roots = load_allowed_roots(str(tmp_path))
    assert roots == [os.path.realpath(tmp_path / "a"), os.path.realpath(tmp_path / "b")]
    monkeypatch.delenv("ACE_COMPANION_OUTPUT")
    assert load_allowed_roots(None)[0].endswith("ACE-Companion")


def test_insert_server_handles_tracks_and_old_live(tmp_path):
    clip = tmp_path / "c.wav"
    clip.write_bytes(b"RIFF")
    song = FakeSong()
    server = InsertServer(lambda: song, [str(tmp_path)], port=0)
    try:
        ok = server.handle("/acecomp/live/insert", ["r1", 0, str(clip), 8.0, 0, ""])
        assert ok == [("/acecomp/live/inserted", "r1", "ok", "")]
        assert song.tracks[0].arrangement_clips[0].start_time == 8.0
        assert song.tracks[0].arrangement_clips[0].warping is False
        midi = server.handle("/acecomp/live/insert", ["r2", 1, str(clip), 0.0, 0, ""])
        assert midi[0][2] == "error" and "audio tracks" in midi[0][3]
        missing = server.handle("/acecomp/live/insert", ["r3", 9, str(clip), 0.0, 0, ""])
        assert "does not exist" in missing[0][3]
        negative = server.handle("/acecomp/live/insert", ["r4", 0, str(clip), -1.0, 0, ""])
        assert "outside" in negative[0][3]
        short = server.handle("/acecomp/live/insert", ["r5"])
        assert "needs" in short[0][3]
        assert server.handle("/acecomp/live/ping", []) == [("/acecomp/live/pong", 0)]
        assert server.handle("/acecomp/live/nope", [])[0][0] == "/acecomp/live/error"
    finally:
        server.close()


def test_insert_server_reports_live_versions_without_the_api(tmp_path):
    clip = tmp_path / "c.wav"
    clip.write_bytes(b"RIFF")

    class OldTrack:
        name, has_audio_input = "Audio", True

    class OldSong:
        tracks = [OldTrack()]

    server = InsertServer(lambda: OldSong(), [str(tmp_path)], port=0)
    try:
        reply = server.handle("/acecomp/live/insert", ["r", 0, str(clip), 0.0, 0, ""])
        assert reply[0][2] == "error" and "Live 12" in reply[0][3] and "drag" in reply[0][3]
    finally:
        server.close()


@pytest.fixture
def live(tmp_path):
    listen = free_udp_port()
    sim = SimulatedAbletonOSC(reply_port=listen, allowed_root=str(tmp_path))
    state = HostState()
    adapter = AbletonAdapter(state, send_port=sim.port, listen_port=listen, insert_port=sim.insert_port, ping_s=0.2)
    adapter.start()
    try:
        wait_for(lambda: adapter.status()["connected"] and all(
            state.get(name) is not None for name in ("key", "selected_track", "meter", "tempo", "region_qn")))
        yield sim, adapter, state
    finally:
        adapter.stop()
        sim.close()


def test_state_from_abletonosc(live):
    sim, adapter, state = live
    assert state.get("tempo") == 96.0 and state.get("meter") == (3, 4) and state.get("key") == "A minor"
    assert state.get("selected_track") == 2
    region = state.region()
    assert region.start_s == pytest.approx(3.75) and region.end_s == pytest.approx(18.75)
    assert {"tempo", "loop_start", "loop_length", "root_note", "scale_name"} <= sim.listening
    sim.set("tempo", 120.0)
    wait_for(lambda: state.get("tempo") == 120.0)
    assert state.region().start_s == pytest.approx(3.0)  # the loop brace is in beats: it follows the tempo
    sim.set("is_playing", 1)
    wait_for(lambda: state.get("playing") is True)
    wait_for(lambda: adapter.status()["insert_script"])


def test_malformed_abletonosc_values_are_ignored(live):
    sim, adapter, state = live
    sim.set("tempo", float("nan"))
    sim.set("loop_length", -4.0)
    sim.set("scale_name", 5)
    wait_for(lambda: adapter.errors >= 3)
    assert state.get("tempo") == 96.0 and state.region().start_s == pytest.approx(3.75)


def test_insert_through_remote_script_and_its_refusals(live, tmp_path):
    sim, adapter, state = live
    clip = tmp_path / "take.wav"
    clip.write_bytes(b"RIFF")
    adapter.insert(str(clip), 3.75, new_track=True, track_name="drums")
    track = sim.song.tracks[-1]
    assert track.name == "drums" and track.arrangement_clips[0].start_time == pytest.approx(6.0)
    with pytest.raises(AdapterError, match="outside"):
        adapter.insert("/etc/passwd", 0.0)


def test_missing_remote_script_times_out_clearly(tmp_path):
    listen = free_udp_port()
    sim = SimulatedAbletonOSC(reply_port=listen)
    state = HostState()
    adapter = AbletonAdapter(state, send_port=sim.port, listen_port=listen, insert_port=free_udp_port(), ping_s=0.2)
    adapter.start()
    try:
        wait_for(lambda: state.get("tempo") is not None)
        with pytest.raises(AdapterError, match="Remote Script did not answer"):
            adapter.insert(str(tmp_path / "x.wav"), 0.0, timeout_s=0.3)
    finally:
        adapter.stop()
        sim.close()
