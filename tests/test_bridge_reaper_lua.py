"""Runs bridge/reaper/ace_companion.lua in a Lua interpreter (lupa) against a mock REAPER API,
then talks to it through the real mailbox code the bridge uses."""

import pytest

from bridge.host_state import HostState
from bridge.reaper.adapter import ReaperMailbox, state_from_mailbox
from tests.reaper_lua import SCRIPT, mock_reaper, start_script


@pytest.fixture
def reaper(tmp_path):
    lua, mock = mock_reaper(tmp_path / "mailbox")
    start_script(lua)  # runs loop() once, which defers itself

    def tick(seconds=0.2):
        mock.now = mock.now + seconds
        mock.deferred()
    return lua, mock, tick, ReaperMailbox(str(tmp_path / "mailbox"))


def run_command(tick, box, command, **fields):
    cmd_id = box.send(command, **fields)
    tick()
    return box.wait(cmd_id, timeout_s=1)


def test_state_file_describes_the_project(reaper):
    lua, mock, tick, box = reaper
    tick()
    fields = box.read_state()
    values = state_from_mailbox(fields)
    assert values["region_s"] == (3.75, 18.75)
    assert values["tempo"] == 96 and values["meter"] == (3, 4) and values["key"] == "A minor"
    assert values["project_name"] == "Demo" and values["sample_rate"] == 44100
    assert values["selected_track"] == 1 and values["selected_track_name"] == "Keys"
    assert values["tempo_map"] == [{"qn": 0.0, "bpm": 96.0, "num": 3, "den": 4}]
    # a tempo change mid-song shows up as a second marker
    mock.markers = lua.eval("{ {0, 96, 3, 4}, {15.0, 120, 4, 4} }")
    tick()
    state = HostState()
    state.update("reaper", **state_from_mailbox(box.read_state()))
    assert state.tempo_map().qn_to_seconds(24 + 4) == pytest.approx(17.0)


def test_first_marker_meter_starts_at_the_marker_not_at_bar_one(reaper):
    """3/4 at 96 BPM from the project settings; the first marker, at bar 17, switches to 4/4 at 120."""
    lua, mock, tick, box = reaper
    bar_s = 3 * 60 / 96
    mock.markers = lua.eval("{ {%r, 120, 4, 4} }" % (16 * bar_s))
    tick()
    values = state_from_mailbox(box.read_state())
    assert values["tempo_map"] == [{"qn": 0.0, "bpm": 96.0, "num": 3, "den": 4},
                                   {"qn": 48.0, "bpm": 120.0, "num": 4, "den": 4}]
    state = HostState()
    state.update("reaper", **values)
    tempo_map = state.tempo_map()
    assert tempo_map.bar_to_seconds(9) == pytest.approx(9 * bar_s)  # bar 10 starts at 16.875 s
    assert tempo_map.bar_to_seconds(17) == pytest.approx(16 * bar_s + 2.0)  # one 4/4 bar at 120 = 2 s


def test_render_sets_and_restores_render_settings(reaper, tmp_path):
    lua, mock, tick, box = reaper
    dest = tmp_path / "renders" / "ctx.wav"
    dest.parent.mkdir()
    reply = run_command(tick, box, "render", start="1.875", end="20.625", path=str(dest), rate="48000")
    assert reply == {"ok": "1", "path": str(dest), "change_count": "7"}
    seen = mock.seen_render
    assert (seen.settings, seen.bounds, seen.start, seen.finish, seen.channels) == (0, 0, 1.875, 20.625, 2)
    assert seen.srate == 48000
    assert seen.file == str(dest.parent) and seen.pattern == "ctx" and seen.format == "ZXZhdxgAAA=="
    assert list(mock.actions.values()) == [42230]
    # the user's settings are back
    assert (mock.info.RENDER_SETTINGS, mock.info.RENDER_BOUNDSFLAG, mock.info.RENDER_CHANNELS) == (32, 1, 1)
    assert mock.info.RENDER_SRATE == 0
    assert mock.info_str.RENDER_FILE == "/user/renders" and mock.info_str.RENDER_FORMAT == "bDNwbQ=="


def test_render_of_the_selected_track_solos_it_and_restores(reaper, tmp_path):
    lua, mock, tick, box = reaper
    mock.tracks[1].solo = 2
    run_command(tick, box, "render", start="0", end="10", path=str(tmp_path / "t.wav"), source="track")
    assert (mock.seen_render.solo_drums, mock.seen_render.solo_keys) == (0, 1)
    assert (mock.tracks[1].solo, mock.tracks[2].solo) == (2, 0)


def test_render_failures_are_reported(reaper, tmp_path):
    lua, mock, tick, box = reaper
    mock.render_size = 0  # the user cancelled the render: no file
    reply = run_command(tick, box, "render", start="0", end="10", path=str(tmp_path / "none.wav"))
    assert "did not write" in reply["error"]
    reply = run_command(tick, box, "render", start="5", end="1", path=str(tmp_path / "x.wav"))
    assert "start < end" in reply["error"]
    reply = run_command(tick, box, "bogus")
    assert "unknown command" in reply["error"]


def test_insert_replaces_the_selection_in_one_undo_block(reaper, tmp_path):
    lua, mock, tick, box = reaper
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    keys = mock.tracks[2]
    old = lua.eval("function(track) return reaper.AddMediaItemToTrack(track) end")(keys)
    old.D_POSITION, old.D_LENGTH = 0.0, 30.0
    reply = run_command(tick, box, "insert", path=str(clip), position="3.75", track=-1, new_track=0,
                        track_name="", replace=1, length="15")
    assert reply["ok"] == "1"
    spans = sorted((item.D_POSITION, item.D_LENGTH) for item in keys["items"].values())
    assert spans == [(0.0, 3.75), (3.75, 15.0), (18.75, 11.25)]  # old item split around the new clip
    new = next(item for item in keys["items"].values() if item.takes[1] is not None and item.takes[1].source)
    assert new.takes[1].source.path == str(clip) and new.C_BEATATTACHMODE == 0
    assert list(mock.undo.values()) == ["begin", "ACE Companion: insert clip"]


def test_insert_on_a_new_named_track(reaper, tmp_path):
    lua, mock, tick, box = reaper
    clip = tmp_path / "drums.wav"
    clip.write_bytes(b"RIFF")
    reply = run_command(tick, box, "insert", path=str(clip), position="3.75", track=-1, new_track=1,
                        track_name="drums", replace=0, length="15")
    assert reply["ok"] == "1"
    names = [t.name for t in mock.tracks.values()]
    assert names == ["Drums", "Keys", "drums"]  # right after the selected track
    reply = run_command(tick, box, "insert", path=str(tmp_path / "missing.wav"), position="0", track=-1,
                        new_track=0, track_name="", replace=0, length="")
    assert "cannot open" in reply["error"]


def test_stems_tracks_come_out_in_the_order_asked(reaper, tmp_path):
    lua, mock, tick, box = reaper
    for name in ("drums", "bass", "vocals"):
        clip = tmp_path / f"{name}.wav"
        clip.write_bytes(b"RIFF")
        reply = run_command(tick, box, "insert", path=str(clip), position="3.75", track=-1, new_track=1,
                            track_name=name, replace=0, length="15", group="action1")
        assert reply["ok"] == "1"
    assert [t.name for t in mock.tracks.values()] == ["Drums", "Keys", "drums", "bass", "vocals"]


def test_render_is_skipped_when_the_project_has_not_changed(reaper, tmp_path):
    lua, mock, tick, box = reaper
    tick()
    assert box.read_state()["change_count"] == "7"
    first = run_command(tick, box, "render", start="0", end="10", path=str(tmp_path / "a.wav"))
    assert first["path"] == str(tmp_path / "a.wav") and first["change_count"] == "7"
    again = run_command(tick, box, "render", start="0", end="10", path=str(tmp_path / "b.wav"), unchanged_since="7")
    assert again == {"ok": "1", "unchanged": "1", "change_count": "7"}
    assert list(mock.actions.values()) == [42230]  # rendered once
    mock.change_count = 8  # the user edited something
    edited = run_command(tick, box, "render", start="0", end="10", path=str(tmp_path / "c.wav"), unchanged_since="7")
    assert edited["path"] == str(tmp_path / "c.wav") and edited["change_count"] == "8"
    assert list(mock.actions.values()) == [42230, 42230]


def test_wake_script_answers_a_command_at_once(reaper, tmp_path):
    lua, mock, tick, box = reaper
    mock.script_path = str(SCRIPT.with_name("ace_companion_wake.lua"))
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    cmd_id = box.send("insert", path=str(clip), position="3.75", track=-1, new_track=0, track_name="",
                      replace=0, length="15")
    lua.execute(SCRIPT.with_name("ace_companion_wake.lua").read_text())  # what /action/_RS... runs; no tick
    assert box.wait(cmd_id, timeout_s=0.1)["ok"] == "1"
    assert len(list(mock.tracks[2]["items"].values())) == 1
