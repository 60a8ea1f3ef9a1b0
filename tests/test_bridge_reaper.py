"""REAPER adapter pieces: OSC feedback from the default pattern, web BEATPOS, mailbox state."""

import os

import pytest

from bridge.adapters import AdapterError
from bridge.host_state import HostState
from bridge.reaper.adapter import ReaperAdapter, ReaperMailbox, format_kv, parse_kv, state_from_mailbox
from simulators import wait_for
from simulators.osc import OscPeer


@pytest.fixture
def adapter(tmp_path):
    state = HostState()
    reaper = ReaperAdapter(state, listen_port=0, mailbox=str(tmp_path / "mb"), poll_s=0.02)
    reaper.start()
    peer = OscPeer()
    try:
        yield reaper, state, peer
    finally:
        peer.close()
        reaper.stop()


def test_default_pattern_feedback_updates_state(adapter):
    reaper, state, peer = adapter
    port = reaper.listen_port
    peer.send(port, "/tempo/raw", 128.0)
    peer.send(port, "/time", 12.5)
    peer.send(port, "/loop/start/time", 4.0)
    peer.send(port, "/loop/end/time", 12.0)
    peer.send(port, "/play", 1.0)
    peer.send(port, "/track/3/select", 1.0)
    wait_for(lambda: state.get("selected_track") == 2)
    assert state.get("tempo") == 128.0 and state.get("position_s") == 12.5
    assert state.region().start_s == 4.0 and state.region().end_s == 12.0
    assert state.get("playing") is True and state.field("tempo").source == "reaper"
    assert reaper.status()["connected"]
    peer.send(port, "/stop", 1.0)
    wait_for(lambda: state.get("playing") is False)


def test_malformed_feedback_is_counted_not_applied(adapter):
    reaper, state, peer = adapter
    port = reaper.listen_port
    peer.send(port, "/tempo/raw", 100.0)
    wait_for(lambda: state.get("tempo") == 100.0)
    peer.send(port, "/tempo/raw", float("nan"))
    peer.send(port, "/tempo/raw", "fast")
    peer.send(port, "/tempo/raw", -5.0)
    peer.send(port, "/loop/start/time", 9.0)
    peer.send(port, "/loop/end/time", 3.0)  # inverted: no region
    peer.send(port, "/loop/start/time", -2.0)
    wait_for(lambda: reaper.errors >= 4)
    assert state.get("tempo") == 100.0 and state.region() is None


def test_removing_the_time_selection_clears_the_region(adapter):
    reaper, state, peer = adapter
    port = reaper.listen_port
    peer.send(port, "/loop/start/time", 10.0)
    peer.send(port, "/loop/end/time", 20.0)
    wait_for(lambda: state.region() is not None and state.region().end_s == 20.0)
    peer.send(port, "/loop/start/time", 0.0)  # "Remove time selection": both edges go to 0
    peer.send(port, "/loop/end/time", 0.0)
    wait_for(lambda: state.get("region_s", "unset") is None)
    assert state.region() is None


def test_a_selection_moved_earlier_never_shows_an_invented_region(adapter):
    reaper, state, peer = adapter
    port = reaper.listen_port
    seen = []
    state.subscribe(lambda changed: seen.append(changed["region_s"]["value"]) if "region_s" in changed else None)
    peer.send(port, "/loop/start/time", 10.0)
    peer.send(port, "/loop/end/time", 20.0)
    wait_for(lambda: seen and seen[-1] == [10.0, 20.0])
    peer.send(port, "/loop/start/time", 2.0)
    peer.send(port, "/loop/end/time", 5.0)
    wait_for(lambda: seen[-1] == [2.0, 5.0])
    assert [2.0, 20.0] not in seen and [0.0, 20.0] not in seen


def test_mailbox_state_without_a_selection_clears_the_region():
    values = state_from_mailbox(parse_kv("sel_start=0.000000000\nsel_end=0.000000000\ntempo=96\n"))
    assert "region_s" in values and values["region_s"] is None


def test_web_interface_beatpos_gives_meter(adapter):
    reaper, state, _ = adapter
    reaper.apply_web_reply("BEATPOS\t1\t10.5\t21.0\t5\t1.0\t7\t8\nTRANSPORT\t1\t10.5\t0\t6.1.00\t6.1.00\n")
    assert state.get("meter") == (7, 8) and state.get("playing") is True and state.get("position_s") == 10.5
    reaper.apply_web_reply("BEATPOS\tx\t\t\n")
    assert reaper.errors == 1


def test_mailbox_state_with_tempo_map(adapter):
    reaper, state, _ = adapter
    text = format_kv({"sel_start": "2.0", "sel_end": "9.0", "tempo": "120", "meter": "4/4", "key": "Bb major",
                      "project_name": "Tune", "sample_rate": "48000", "track": "2", "track_name": "Gtr",
                      "play_state": "5"})
    text += "marker=0 120 4 4\nmarker=4.0 60 3 4\n"
    with open(os.path.join(reaper.mailbox.folder, "state.txt"), "w") as fh:
        fh.write(text)
    wait_for(lambda: state.get("project_name") == "Tune")
    assert state.region().start_s == 2.0 and state.get("key") == "Bb major" and state.get("sample_rate") == 48000
    assert state.get("selected_track") == 2 and state.get("recording") is True
    tempo_map = state.tempo_map()
    assert tempo_map.qn_to_seconds(11) == pytest.approx(7.0)  # 8 QN at 120, then 3 QN at 60


def test_state_parsing_skips_junk():
    fields = parse_kv("sel_start=abc\nsel_end=4\ntempo=nan\nmeter=x/y\nmarker=1 2\nsample_rate=12\nnoequals\n")
    values = state_from_mailbox(fields)
    assert "region_s" not in values and "tempo" not in values and "meter" not in values
    assert values["tempo_map"] is None and "sample_rate" not in values
    with pytest.raises(ValueError):
        format_kv({"path": "a\nb"})


def test_mailbox_commands_answer_and_time_out(tmp_path):
    box = ReaperMailbox(str(tmp_path))
    cmd_id = box.send("render", start=1.0, path="/x.wav")
    assert parse_kv(open(tmp_path / f"cmd-{cmd_id}.txt").read())["command"] == "render"
    with open(tmp_path / f"cmd-{cmd_id}.done", "w") as fh:
        fh.write("ok=1\npath=/x.wav\n")
    assert box.wait(cmd_id, 1.0) == {"ok": "1", "path": "/x.wav"}
    late = box.send("insert", path="/y.wav")
    with pytest.raises(AdapterError, match="ace_companion.lua"):
        box.wait(late, 0.1)
    assert not (tmp_path / f"cmd-{late}.txt").exists()  # withdrawn


def test_render_error_reply_is_reported(tmp_path):
    reaper = ReaperAdapter(HostState(), listen_port=0, mailbox=str(tmp_path))
    try:
        import threading

        def script():
            wait_for(lambda: any(n.endswith(".txt") for n in os.listdir(tmp_path)))
            name = next(n for n in os.listdir(tmp_path) if n.endswith(".txt"))
            cmd = parse_kv(open(tmp_path / name).read())
            with open(tmp_path / f"cmd-{cmd['id']}.done", "w") as fh:
                fh.write("error=render cancelled by user\n")
        threading.Thread(target=script, daemon=True).start()
        with pytest.raises(AdapterError, match="cancelled by user"):
            reaper.render(0.0, 10.0, str(tmp_path / "r.wav"), timeout_s=5)
    finally:
        reaper.osc.server.server_close()
