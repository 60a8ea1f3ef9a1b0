"""The /acecomp OSC namespace: parsing, replies, and faults (the bridge keeps running)."""

import json

import pytest

from bridge.app import BridgeApp
from bridge.commands import parse_settings
from bridge.config import BridgeConfig
from bridge.oscio import OscArgumentError, build_message, float_arg, osc_arg
from simulators import wait_for
from simulators.osc import OscPeer, free_udp_port
from simulators.reaper import timecode


@pytest.fixture
def bridge(tmp_path):
    dead_engine = f"http://127.0.0.1:{free_udp_port()}"  # nothing listens there: the engine is gone
    config = BridgeConfig(engine_url=dead_engine, host="none", osc_port=0, output_dir=str(tmp_path / "clips"))
    app = BridgeApp(config)
    app.start()
    peer = OscPeer()
    try:
        yield app, peer
    finally:
        peer.close()
        app.stop()


def ask(app, peer, address, *args, expect="/acecomp/ok"):
    before = len(peer.received)
    peer.send(app.commands.port, address, *args)
    wait_for(lambda: len(peer.received) > before, timeout=10)
    addr, reply = peer.received[before]
    assert addr == expect, (addr, reply)
    return reply


def test_parse_settings_forms():
    assert parse_settings(()) == {}
    assert parse_settings(('{"seed": 3, "caption": "x"}',)) == {"seed": 3, "caption": "x"}
    assert parse_settings(("seed", 3, "caption", "x")) == {"seed": 3, "caption": "x"}
    assert parse_settings(("start", 1.0, "end", 5)) == {"region": [1.0, 5.0]}
    for bad in (("seed",), ('{"seed": ',), ("[1, 2]",), (3, 4), ("seed", float("nan"))):
        with pytest.raises(OscArgumentError):
            parse_settings(bad)
    with pytest.raises(OscArgumentError, match="start"):
        parse_settings(("start", 1.0, "x", 2))


def test_argument_helpers():
    assert float_arg((3,), 0, "x") == 3.0
    assert float_arg(("2.5",), 0, "x") == 2.5
    for args in ((), ("abc",), (float("inf"),), (True,), (b"x",)):
        with pytest.raises(OscArgumentError):
            float_arg(args, 0, "x")
    assert osc_arg(2 ** 40) == str(2 ** 40) and osc_arg(None) == "" and osc_arg(True) == 1
    assert build_message("/a", 1, 2.0, "s").startswith(b"/a\0\0")


def test_manual_host_state_and_status(bridge):
    app, peer = bridge
    ask(app, peer, "/acecomp/tempo", 96.0)
    ask(app, peer, "/acecomp/meter", 3, 4)
    ask(app, peer, "/acecomp/key", "F# minor")
    ask(app, peer, "/acecomp/region", 3.75, 18.75)
    ask(app, peer, "/acecomp/samplerate", 48000)
    ask(app, peer, "/acecomp/project", "My Song")
    state = app.host_state
    assert state.get("tempo") == 96.0 and state.get("meter") == (3, 4) and state.get("key") == "F# minor"
    assert state.region().start_s == 3.75 and state.field("region_s").source == "osc"
    status = json.loads(ask(app, peer, "/acecomp/status", expect="/acecomp/status")[0])
    assert status["host"]["project_name"] == "My Song" and status["adapters"] == {}
    ask(app, peer, "/acecomp/region/beats", 6.0, 30.0)
    assert state.region().start_s == pytest.approx(3.75)


@pytest.mark.parametrize("address,args,fragment", [
    ("/acecomp/region", (float("nan"), 4.0), "finite"),
    ("/acecomp/region", (5.0, 4.0), "not after"),
    ("/acecomp/region", (-1.0, 4.0), "negative"),
    ("/acecomp/region", ("soon", 4.0), "number"),
    ("/acecomp/region", (1.0,), "missing"),
    ("/acecomp/region/beats", (8.0, 2.0), "end after"),
    ("/acecomp/tempo", (0.0,), "tempo"),
    ("/acecomp/tempo", ("fast",), "number"),
    ("/acecomp/meter", (4, 3), "denominator"),
    ("/acecomp/key", ("H dur",), "key"),
    ("/acecomp/samplerate", (12,), "sample rate"),
    ("/acecomp/source", ("/no/such/file.wav",), "outside"),
    ("/acecomp/insert", ("/etc/passwd",), "outside"),
    ("/acecomp/cancel", (), "nothing to cancel"),
    ("/acecomp/bogus", (), "unknown address"),
    ("/live/song/get/tempo", (), "unknown address"),
    ("/acecomp/repaint", ('{"seed": ',), "JSON"),
    ("/acecomp/repaint", (), "tempo is unknown"),
])
def test_bad_messages_get_error_replies_and_bridge_keeps_running(bridge, address, args, fragment):
    app, peer = bridge
    reply = ask(app, peer, address, *args, expect="/acecomp/error")
    assert fragment in reply[1]
    ask(app, peer, "/acecomp/ping", expect="/acecomp/pong")


def test_a_refused_insert_is_a_user_error_one_warning_no_traceback(bridge, caplog):
    app, peer = bridge
    with caplog.at_level("DEBUG", logger="bridge"):
        reply = ask(app, peer, "/acecomp/insert", "/etc/passwd", expect="/acecomp/error")
    assert reply[0] == "insert" and "outside the clip folder" in reply[1]
    records = [r for r in caplog.records if r.name.startswith("bridge")]
    assert [r.levelname for r in records] == ["WARNING"]
    assert records[0].exc_info is None and "outside the clip folder" in records[0].getMessage()


def test_garbage_datagrams_are_ignored(bridge):
    app, peer = bridge
    peer.send_raw(app.commands.port, b"\x00\x01garbage")
    peer.send_raw(app.commands.port, b"/acecomp/tempo\x00\x00,f\x00\x00\x01\x02")  # short float
    peer.send_raw(app.commands.port, b"/acecomp/ping")  # no padding, no type tags
    # one server thread handles datagrams in order: once a ping is answered, the garbage before
    # it has been dealt with
    peer.send(app.commands.port, "/acecomp/ping")
    wait_for(lambda: any(addr == "/acecomp/pong" for addr, _ in peer.received), timeout=10)
    assert all(addr in ("/acecomp/error", "/acecomp/pong") for addr, _ in peer.received)
    assert app.host_state.get("tempo") is None
    peer.received.clear()
    ask(app, peer, "/acecomp/ping", expect="/acecomp/pong")


def test_action_errors_name_the_problem(bridge, tmp_path):
    import soundfile as sf
    app, peer = bridge
    ask(app, peer, "/acecomp/tempo", 120.0)
    reply = ask(app, peer, "/acecomp/repaint", expect="/acecomp/error")
    assert "no region selected" in reply[1]
    ask(app, peer, "/acecomp/region", 4.0, 5.0)
    reply = ask(app, peer, "/acecomp/repaint", expect="/acecomp/error")
    assert "at least 3" in reply[1]  # snapped to one 2 s bar: too short for repaint
    ask(app, peer, "/acecomp/region", 4.0, 12.0)
    reply = ask(app, peer, "/acecomp/repaint", "bogus_setting", 1, expect="/acecomp/error")
    assert "bogus_setting" in reply[1]
    reply = ask(app, peer, "/acecomp/repaint", "inference_steps", 0, expect="/acecomp/error")
    assert "inference_steps" in reply[1]
    reply = ask(app, peer, "/acecomp/stems", "stems", "drums,kazoo", expect="/acecomp/error")
    assert "kazoo" in reply[1]
    reply = ask(app, peer, "/acecomp/repaint", expect="/acecomp/error")
    assert "no source audio" in reply[1]
    source = tmp_path / "clips" / "mix.wav"  # /acecomp/source may point only into allowed folders
    sf.write(source, timecode(0, 44100 * 20, 44100).T, 44100)
    ask(app, peer, "/acecomp/source", str(source))
    reply = ask(app, peer, "/acecomp/repaint", expect="/acecomp/error")
    assert "engine is not running" in reply[1]
    ask(app, peer, "/acecomp/ping", expect="/acecomp/pong")


def test_reply_port_setting(tmp_path):
    listener = OscPeer()
    config = BridgeConfig(host="none", osc_port=0, reply_port=listener.port, output_dir=str(tmp_path))
    app = BridgeApp(config)
    app.start()
    sender = OscPeer()
    try:
        sender.send(app.commands.port, "/acecomp/ping")
        listener.wait_for("/acecomp/pong", timeout=10)
        assert not sender.all("/acecomp/pong")
    finally:
        sender.close()
        listener.close()
        app.stop()
