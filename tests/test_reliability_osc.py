"""OSC packets cannot stall the bridge, bursts of actions are bounded, /acecomp/source is confined."""

import os
import threading
import time

import pytest
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.app import BridgeApp
from bridge.commands import MAX_PREPARING_ACTIONS, MAX_WAITING_ACTIONS, SOURCE_DIRS_ENV, CommandServer
from bridge.config import BridgeConfig
from bridge.oscio import OscEndpoint, packet_messages
from simulators import wait_for
from simulators.osc import OscPeer, free_udp_port
from simulators.reaper import timecode


@pytest.fixture
def bridge(tmp_path):
    config = BridgeConfig(engine_url=f"http://127.0.0.1:{free_udp_port()}", host="none", osc_port=0,
                          output_dir=str(tmp_path / "clips"))
    app = BridgeApp(config)
    app.start()
    peer = OscPeer()
    try:
        yield app, peer
    finally:
        peer.close()
        app.stop()


def _message(address, *args):
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build()


def _bundle(timetag, *messages):
    builder = OscBundleBuilder(timetag)
    for message in messages:
        builder.add_content(message)
    return builder.build()


def _ping(app, peer):
    before = len(peer.all("/acecomp/pong"))
    peer.send(app.commands.port, "/acecomp/ping")
    wait_for(lambda: len(peer.all("/acecomp/pong")) > before, timeout=10)


def test_future_timetag_bundle_is_dispatched_at_once(bridge):
    app, peer = bridge
    an_hour_ahead = time.time() + 3600
    peer.send_raw(app.commands.port, _bundle(an_hour_ahead, _message("/acecomp/tempo", 97.0)).dgram)
    _ping(app, peer)  # an hour-long sleep on the socket thread would never let this through
    wait_for(lambda: app.host_state.values().get("tempo") == 97.0, timeout=10)


def test_wildcard_address_is_refused_and_does_not_block(bridge):
    app, peer = bridge
    peer.send(app.commands.port, "/acecomp/" + "*" * 26)
    peer.send(app.commands.port, "/acecomp/t?mpo", 120.0)
    peer.send(app.commands.port, "/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*")
    _ping(app, peer)
    errors = wait_for(lambda: len(peer.all("/acecomp/error")) >= 2 and peer.all("/acecomp/error"), timeout=10)
    assert all("patterns are not accepted" in args[1] for args in errors)
    assert app.host_state.values().get("tempo") is None  # /acecomp/t?mpo did not reach the tempo handler


def test_malformed_and_deeply_nested_packets_are_dropped(bridge):
    app, peer = bridge
    inner = _message("/acecomp/tempo", 90.0)
    for _ in range(40):
        inner = _bundle(time.time(), inner)
    for data in (inner.dgram, b"#bundle\0" + b"\xff" * 30, b"/acecomp/ping\0\0\0,q\0\0", b"\0" * 64):
        peer.send_raw(app.commands.port, data)
    _ping(app, peer)
    assert app.host_state.values().get("tempo") is None


def test_exact_and_segment_dispatch():
    endpoint = OscEndpoint("127.0.0.1", 0, "test")
    try:
        endpoint.map("/live/song/get/*", "song")
        endpoint.map("/track/*/select", "select")
        endpoint.map("/acecomp/ping", "ping")
        assert endpoint.handler_for("/acecomp/ping") == "ping"
        assert endpoint.handler_for("/live/song/get/tempo") == "song"
        assert endpoint.handler_for("/track/3/select") == "select"
        for address in ("/track/3/4/select", "/acecomp/p*", "/live/song/get/*", "/acecomp/ping/x", "/acecomp"):
            assert endpoint.handler_for(address) is None, address
    finally:
        endpoint.stop()
    bundle = _bundle(time.time() + 30, _message("/a", 1), _bundle(time.time() - 30, _message("/b", 2)))
    assert [m.address for m in packet_messages(bundle.dgram)] == ["/a", "/b"]


class _SlowApp:
    """Stands in for BridgeApp: each action holds a slot until `release` is set."""

    def __init__(self):
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.finished = 0
        self.config = BridgeConfig()

    def run_action(self, action, settings, notify=None):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.release.wait(30)
        with self.lock:
            self.running -= 1
            self.finished += 1
        return "job"

    def allowed_roots(self):
        return [self.config.output_dir]


def test_a_burst_of_actions_is_bounded_and_queued_with_a_reply():
    app = _SlowApp()
    server = CommandServer(app, port=0)
    server.start()
    peer = OscPeer()
    try:
        burst = MAX_PREPARING_ACTIONS + MAX_WAITING_ACTIONS + 3
        for _ in range(burst):
            peer.send(server.port, "/acecomp/cover")
        wait_for(lambda: len(peer.all("/acecomp/queued")) == MAX_WAITING_ACTIONS
                   and len(peer.all("/acecomp/error")) == 3, timeout=10)
        assert sorted(args[1] for args in peer.all("/acecomp/queued")) == list(range(1, MAX_WAITING_ACTIONS + 1))
        assert all("busy" in args[1] for args in peer.all("/acecomp/error"))
        _ping_server(server, peer)  # the socket still answers while actions wait
        app.release.set()
        wait_for(lambda: app.finished == MAX_PREPARING_ACTIONS + MAX_WAITING_ACTIONS, timeout=20)
        assert app.peak == MAX_PREPARING_ACTIONS
        wait_for(lambda: server.gate.counts() == (0, 0), timeout=10)
    finally:
        app.release.set()
        peer.close()
        server.stop()


def _ping_server(server, peer):
    before = len(peer.all("/acecomp/pong"))
    peer.send(server.port, "/acecomp/ping")
    wait_for(lambda: len(peer.all("/acecomp/pong")) > before, timeout=10)


def _source_reply(app, peer, path):
    before = len(peer.received)
    peer.send(app.commands.port, "/acecomp/source", path)
    wait_for(lambda: len(peer.received) > before, timeout=10)
    return peer.received[before]


def test_source_is_confined_like_inserts(bridge, tmp_path, monkeypatch):
    import soundfile as sf

    app, peer = bridge
    private = tmp_path / "private"
    private.mkdir()
    secret = private / "secret.wav"
    sf.write(secret, timecode(0, 4800, 48000).T, 48000)
    os.symlink(secret, tmp_path / "clips" / "link.wav")
    refused = {}
    for path in (str(secret), str(private / "missing.wav"), "/etc/passwd", str(tmp_path / "clips" / "link.wav"),
                 "relative.wav", str(tmp_path / "clips" / ".." / "private" / "secret.wav")):
        address, args = _source_reply(app, peer, path)
        assert address == "/acecomp/error" and "outside" in args[1], (path, args)
        refused[path] = args[1].replace(path, "PATH")
    # an existing file and a missing one get the same answer
    assert refused[str(secret)] == refused[str(private / "missing.wav")]
    inside = tmp_path / "clips" / "mix.wav"
    sf.write(inside, timecode(0, 4800, 48000).T, 48000)
    assert _source_reply(app, peer, str(inside))[0] == "/acecomp/ok"
    monkeypatch.setenv(SOURCE_DIRS_ENV, str(private))
    assert _source_reply(app, peer, str(secret))[0] == "/acecomp/ok"


WINDOW_S = 60.0  # each cover's context window: one action's audio is tens of MB
EXPORT_SR = 44100


def test_a_burst_of_long_actions_stays_within_a_memory_bound(tmp_path):
    """8 covers of distinct 60 s windows at once: traced memory stays under what the gate allows
    (MAX_PREPARING_ACTIONS windows being prepared, one more on its way out) plus a fixed margin."""
    import tracemalloc

    import soundfile as sf

    from bridge.clips import ENGINE_SAMPLE_RATE
    from engine.client import EngineClient
    from simulators.pipelines import StandInPipeline, echo_engine

    burst = 8
    regions = [(WINDOW_S / 2 - 2 + 2 * i, WINDOW_S / 2 + 2 + 2 * i) for i in range(burst)]
    song_s = regions[-1][1] + WINDOW_S / 2 + 4  # every window lies inside the exported song
    export = tmp_path / "song.wav"
    sf.write(export, timecode(0.0, int(song_s * EXPORT_SR), EXPORT_SR).T, EXPORT_SR, subtype="PCM_24")
    with echo_engine(tmp_path, StandInPipeline(steps=1)) as engine:
        config = BridgeConfig(engine_url=engine.url, host="none", osc_port=0, output_dir=str(tmp_path / "clips"),
                              source_file=str(export), insert_mode="none", sample_rate=EXPORT_SR,
                              min_context_s=WINDOW_S, max_context_s=WINDOW_S)
        app = BridgeApp(config, engine_client=EngineClient(engine.url, timeout=120))
        app.start()
        peer = OscPeer()
        try:
            app.host_state.update("osc", tempo=120.0, meter=(4, 4))
            spans = {app.plan("cover", {"region": list(region)}).source_span for region in regions}
            assert len(spans) == burst  # distinct windows: the source cache cannot share one
            window_bytes = max(end - start for start, end in spans) * ENGINE_SAMPLE_RATE * 2 * 4  # float32 stereo
            import engine.audio_io  # noqa: F401  the engine's lazy torch import is not the bridge's memory
            tracemalloc.start()
            try:
                for start_s, end_s in regions:
                    peer.send(app.commands.port, "/acecomp/cover", "start", start_s, "end", end_s)
                wait_for(lambda: len(peer.all("/acecomp/done")) == burst, timeout=120)
                peak_bytes = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert [args[1] for args in peer.all("/acecomp/done")] == ["done"] * burst, peer.all("/acecomp/error")
            assert len(peer.all("/acecomp/result")) == burst
            margin_bytes = 16 * 2 ** 20
            bound_bytes = (MAX_PREPARING_ACTIONS + 1) * window_bytes + margin_bytes
            assert peak_bytes < bound_bytes, f"peak {peak_bytes / 2 ** 20:.0f} MiB > {bound_bytes / 2 ** 20:.0f} MiB"
        finally:
            peer.close()
            app.stop()
