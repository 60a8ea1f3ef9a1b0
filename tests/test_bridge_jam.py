"""Jam: chunks generated ahead of the playhead of a simulated REAPER (playing) and a simulated
Live, over the real OSC interface and the engine's HTTP API (echo pipeline)."""

import threading

import numpy as np
import pytest

from bridge.app import BridgeApp
from bridge.config import BridgeConfig
from bridge.grid import TempoMap, TempoPoint
from bridge.host_state import HostState
from bridge.jam import JamContext, JamController, JamError, continuation_request
from bridge.wavchunks import read_wav
from engine.types import Cancelled
from simulators import wait_for
from simulators.ableton import SimulatedAbletonOSC
from simulators.osc import OscPeer, free_udp_port
from simulators.pipelines import EchoPipeline, echo_engine
from simulators.reaper import SimulatedReaper

HOST_SR = 44100
NOW = 1000.0  # a clock that stands still: the playhead is exactly where the DAW last said


def frozen():
    return NOW


class GatedPipeline(EchoPipeline):
    """The echo pipeline, held at the start of a job while `gate` is closed (to make a chunk late).

    `hold_after(n)` lets n more jobs through and closes the gate for the next one, whenever it comes.
    """

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()
        self._passes_left: int | None = None
        self._lock = threading.Lock()

    def hold_after(self, jobs: int) -> None:
        with self._lock:
            self._passes_left = jobs

    def generate(self, request, progress=None, cancel=None, dump=False):
        with self._lock:
            if self._passes_left is not None:
                if self._passes_left == 0:
                    self.gate.clear()
                    self._passes_left = None
                else:
                    self._passes_left -= 1
        self.waiting.set()
        while not self.gate.wait(0.01):
            if cancel and cancel():
                raise Cancelled("cancelled")
        self.waiting.clear()
        return super().generate(request, progress, cancel, dump)


class JamReaper(SimulatedReaper):
    """The simulated REAPER with the script's `insert_named` and a transport the test moves."""

    def _insert_named(self, cmd):
        reply = super()._insert_named(cmd)
        self.inserted[-1]["named"] = True
        return reply

    def play(self, position_s):
        self.state["play_state"] = 1
        self.write_state()
        self.send("/play", 1.0)
        self.move(position_s)

    def move(self, position_s):
        self.send("/time", float(position_s))

    def stop_transport(self):
        self.state["play_state"] = 0
        self.write_state()
        self.send("/stop", 1.0)


@pytest.fixture
def jam_reaper(tmp_path):
    pipeline = GatedPipeline()
    with echo_engine(tmp_path, pipeline) as engine:
        config = BridgeConfig(engine_url=engine.url, host="reaper", osc_port=0, reaper_listen_port=0,
                              reaper_mailbox=str(tmp_path / "mailbox"), output_dir=str(tmp_path / "clips"),
                              request_defaults={"caption": "funk"}, render_timeout_s=5, insert_timeout_s=5)
        app = BridgeApp(config, host_state=HostState(clock=frozen))
        app.jam = JamController(app, clock=frozen)
        app.start()
        reaper = JamReaper(config.reaper_mailbox, app.adapters["reaper"].listen_port, HOST_SR)
        reaper.set_tempo(96, 3, 4)
        reaper.play(0.5)
        wait_for(lambda: app.host_state.get("playing") and app.host_state.get("position_s") == 0.5
                   and app.host_state.get("sample_rate") == HOST_SR and app.host_state.get("meter") == (3, 4))
        client = OscPeer()
        try:
            yield app, reaper, client, engine
        finally:
            client.close()
            reaper.close()
            app.stop()


def chunk_replies(client, count):
    wait_for(lambda: len(client.all("/acecomp/jam/chunk")) >= count)
    return client.all("/acecomp/jam/chunk")[:count]


def check_clip(path, start_s, end_s, bpm, num=3, den=4, bars=2):
    wav = read_wav(path)
    assert wav.sample_rate == HOST_SR and wav.length_samples == round(end_s * HOST_SR) - round(start_s * HOST_SR)
    assert wav.acid.tempo == pytest.approx(bpm) and (wav.acid.meter_num, wav.acid.meter_den) == (num, den)
    assert wav.acid.num_beats == bars * num
    assert wav.bext.time_reference == round(start_s * HOST_SR)
    return wav


def no_job_running(app):
    return not [j for j in app.client.jobs() if j["state"] in ("queued", "running")]


def test_reaper_jam_stays_ahead_follows_tempo_and_caption_then_stops_clean(jam_reaper):
    app, reaper, client, engine = jam_reaper
    bar_s = 1.875  # 3/4 at 96 BPM
    client.send(app.commands.port, "/acecomp/jam/start", '{"bars": 2, "lookahead": 2, "seed": 3}')
    assert client.wait_for("/acecomp/jam/state")[0] == "running"
    first, second = chunk_replies(client, 2)  # two chunks ahead, then it waits for the playhead
    assert first[:3] == (0, pytest.approx(bar_s), pytest.approx(3 * bar_s)) and first[4] == 1
    assert second[:3] == (1, pytest.approx(3 * bar_s), pytest.approx(5 * bar_s))

    # a tempo change at bar 6 (the next chunk's start), then the playhead reaches chunk 0
    change_s = 5 * bar_s
    reaper.markers = ["0 96 3 4", f"{change_s:.9f} 120 3 4"]
    reaper.write_state()
    wait_for(lambda: len(app.host_state.get("tempo_map") or []) == 2)
    client.send(app.commands.port, "/acecomp/jam/prompt", "bossa nova")
    client.wait_for("/acecomp/ok", predicate=lambda a: a[0] == "jam/prompt")
    reaper.move(first[1] + 0.1)
    third = chunk_replies(client, 3)[2]
    new_bar_s = 3 * 60 / 120
    assert third[:3] == (2, pytest.approx(change_s), pytest.approx(change_s + 2 * new_bar_s))
    reaper.move(second[1] + 0.1)
    fourth = chunk_replies(client, 4)[3]
    assert fourth[1] == pytest.approx(third[2]) and fourth[2] == pytest.approx(third[2] + 2 * new_bar_s)

    client.send(app.commands.port, "/acecomp/jam/stop")
    client.wait_for("/acecomp/jam/state", predicate=lambda a: a[0] == "stopped")
    assert wait_for(lambda: no_job_running(app))

    chunks = client.all("/acecomp/jam/chunk")
    session = app.jam.session
    grid = TempoMap([TempoPoint(0, 96, 3, 4), TempoPoint(change_s * 96 / 60, 120, 3, 4)])
    for (_index, start, end, path, inserted), chunk in zip(chunks, session.chunks):
        bar = grid.seconds_to_bar(start)
        assert bar == pytest.approx(round(bar)) and grid.seconds_to_bar(end) - bar == pytest.approx(2)
        check_clip(path, start, end, 96 if start < change_s else 120)
        assert inserted == 1 and chunk.playhead_at_insert_s < start  # placed before the playhead got there
    assert [c[2] for c in chunks[:-1]] == pytest.approx([c[1] for c in chunks[1:]])  # contiguous
    assert {i["track_name"] for i in reaper.inserted} == {"ACE Jam"} and all(i["named"] for i in reaper.inserted)
    assert [i["position"] for i in reaper.inserted] == pytest.approx([c[1] for c in chunks])

    # the first chunk came from the caption alone (under 3 s of mix before it); the rest continue
    requests = engine.pipeline.requests
    assert requests[0].task_type == "text2music" and requests[0].caption == "funk"
    assert all(r.task_type == "repaint" for r in requests[1:])
    assert requests[2].bpm == 120 and requests[1].bpm == 96
    assert [r.caption for r in requests[:4]] == ["funk", "funk", "bossa nova", "bossa nova"]
    assert reaper.renders and reaper.renders[0]["end"] == pytest.approx(bar_s)  # the mix before bar 2


def test_reaper_jam_falling_behind_skips_ahead_and_never_lands_behind_the_playhead(jam_reaper):
    app, reaper, client, engine = jam_reaper
    bar_s = 1.875
    client.send(app.commands.port, "/acecomp/jam/start", "bars", 2, "lookahead", 1)
    first = chunk_replies(client, 1)[0]
    assert first[1] == pytest.approx(bar_s)
    # the engine stalls on the next chunk while the playhead runs past where it would go
    engine.pipeline.gate.clear()
    reaper.move(first[1] + 0.1)
    assert engine.pipeline.waiting.wait(10)
    reaper.move(3 * bar_s + 0.5)
    wait_for(lambda: app.host_state.get("position_s") == 3 * bar_s + 0.5)
    engine.pipeline.gate.set()
    late = chunk_replies(client, 2)[1]
    assert late[1] == pytest.approx(3 * bar_s) and late[4] == 0  # made, but not inserted behind the playhead
    skip = client.wait_for("/acecomp/jam/skip")
    assert skip == (pytest.approx(3 * bar_s), pytest.approx(4 * bar_s))
    nxt = chunk_replies(client, 3)[2]
    assert nxt[1] == pytest.approx(4 * bar_s) and nxt[4] == 1
    playhead = app.host_state.get("position_s")
    assert all(i["position"] > playhead or i["position"] == pytest.approx(bar_s) for i in reaper.inserted)
    assert len(reaper.inserted) == 2

    # the playhead runs to just before the end of what is placed: too close to start the next
    # chunk there (bar 7, 11.25 s) in time, so jam skips to bar 8 before generating
    reaper.move(6 * bar_s - 0.1)
    fourth = chunk_replies(client, 4)[3]
    assert client.all("/acecomp/jam/skip")[-1] == (pytest.approx(6 * bar_s), pytest.approx(7 * bar_s))
    assert fourth[1] == pytest.approx(7 * bar_s) and fourth[4] == 1
    assert app.jam.session.chunks[3].playhead_at_insert_s < fourth[1]
    # overlaps: none
    placed = sorted((c[1], c[2]) for c in client.all("/acecomp/jam/chunk") if c[4] == 1)
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(placed, placed[1:]))


def test_stopping_the_transport_or_stop_cancels_the_job_in_flight(jam_reaper):
    app, reaper, client, engine = jam_reaper
    engine.pipeline.hold_after(1)  # the second chunk hangs in the engine, however soon it starts
    client.send(app.commands.port, "/acecomp/jam/start", "bars", 2)
    chunk_replies(client, 1)
    assert engine.pipeline.waiting.wait(10)
    reaper.stop_transport()
    state = client.wait_for("/acecomp/jam/state", predicate=lambda a: a[0] == "stopped")
    assert "transport stopped" in state[1]
    assert wait_for(lambda: no_job_running(app))
    assert len(reaper.inserted) == 1  # nothing from the cancelled chunk
    jobs = {j["state"] for j in app.client.jobs()}
    assert "cancelled" in jobs
    engine.pipeline.gate.set()
    # a second jam can start; stop over OSC ends it; prompt without a jam is an error
    reaper.play(2.0)
    wait_for(lambda: app.host_state.get("playing"))
    client.send(app.commands.port, "/acecomp/jam/start", "bars", 2)
    wait_for(lambda: app.jam.running)
    client.send(app.commands.port, "/acecomp/jam/stop")
    client.wait_for("/acecomp/ok", predicate=lambda a: a[0] == "jam/stop")
    assert not app.jam.running and wait_for(lambda: no_job_running(app))
    client.send(app.commands.port, "/acecomp/jam/prompt", "x")
    assert "not running" in client.wait_for("/acecomp/error", predicate=lambda a: a[0] == "jam/prompt")[1]
    client.send(app.commands.port, "/acecomp/jam/start", "bars", 0)
    assert "bars 0 must be 1-64" in client.wait_for("/acecomp/error", predicate=lambda a: a[0] == "jam/start")[1]


class JamLive(SimulatedAbletonOSC):
    """The simulated AbletonOSC plus `/live/song/get/track_names`."""

    def _handle(self, sender, address, *args):
        if address == "/live/song/get/track_names":
            return self._reply(sender, address, *[t.name for t in self.song.tracks])
        return super()._handle(sender, address, *args)


def test_ableton_jam_chunks_go_into_the_arrangement_on_one_track(tmp_path):
    listen = free_udp_port()
    clips = tmp_path / "clips"
    live = JamLive(reply_port=listen, allowed_root=str(clips))
    with echo_engine(tmp_path) as engine:
        config = BridgeConfig(engine_url=engine.url, host="ableton", osc_port=0, ableton_port=live.port,
                              ableton_listen_port=listen, ableton_insert_port=live.insert_port,
                              output_dir=str(clips), project="Live Set", request_defaults={"caption": "dub"})
        app = BridgeApp(config)
        app.start()
        try:
            wait_for(lambda: app.adapters_status()["ableton"]["connected"] and app.host_state.region() is not None
                       and app.host_state.get("meter") == (3, 4) and app.host_state.get("tempo") == 96)
            events = []
            # stopped transport: the jam starts at the loop brace's end (beat 30 = bar 11)
            app.jam = JamController(app)
            session = app.jam.start({"bars": 2, "lookahead": 4}, events.append)
            wait_for(lambda: len([e for e in events if e["type"] == "jam_chunk"]) == 4)
            # then it waits (transport stopped) with the fifth chunk queued right after the fourth
            wait_for(lambda: any(e["type"] == "jam_chunk_state" and e["state"] == "queued" for e in events))
            queued = [e for e in events if e["type"] == "jam_chunk_state" and e["state"] == "queued"][-1]
            assert queued["index"] == 4 and queued["start_s"] == pytest.approx(session.chunks[3].end_s)
            app.jam.stop()
            assert not session.running and wait_for(lambda: no_job_running(app))
            jam_tracks = [t for t in live.song.tracks if t.name == "ACE Jam"]
            assert len(jam_tracks) == 1
            starts = [c.start_time for c in jam_tracks[0].arrangement_clips]
            assert starts == pytest.approx([30.0, 36.0, 42.0, 48.0])  # beats, 2 bars of 3/4 each
            for chunk, clip in zip(session.chunks, jam_tracks[0].arrangement_clips):
                check_clip(clip.file_path, chunk.start_s, chunk.end_s, 96)
                assert clip.warping is False
            assert events[-1] == {"type": "jam_state", "state": "stopped", "message": "stopped"}
            assert app.adapters["ableton"].errors == 0  # the track_names answers are not song properties
        finally:
            app.stop()
            live.close()


def test_continuation_request_switches_from_caption_to_context(tmp_path, monkeypatch):
    monkeypatch.setattr("bridge.jam.engine_takes_region_pcm", lambda: False)
    context = JamContext(max_s=5.0)
    first = continuation_request({"caption": "a"}, context, 4.0, str(tmp_path))
    assert first.request["task_type"] == "text2music" and first.request["duration"] == 10.0
    assert first.upload_path is None and first.offset_s == 0.0 and "output_region" not in first.request
    context.add(np.zeros((2, 48000 * 4), np.float32))
    context.add(np.ones((2, 48000 * 3), np.float32))
    assert context.seconds == pytest.approx(5.0)  # only the last max_s seconds are kept
    second = continuation_request({"caption": "a"}, context, 4.0, str(tmp_path))
    assert second.request["task_type"] == "repaint" and second.offset_s == 5.0
    assert (second.request["repainting_start"], second.request["repainting_end"]) == (5.0, 9.0)
    assert second.upload_path.endswith(".wav")


def test_continuation_request_chains_the_engines_take_when_it_keeps_one(tmp_path, monkeypatch):
    monkeypatch.setattr("bridge.jam.engine_takes_region_pcm", lambda: True)
    context = JamContext(max_s=10.0)
    context.add(np.zeros((2, 48000 * 6), np.float32))
    ordinary = continuation_request({}, context, 4.0, str(tmp_path), 44100)
    assert ordinary.request["output_region"] == [6.0, 10.0] and ordinary.request["output_sample_rate"] == 44100
    assert ordinary.upload_path is not None
    context.take_file_id, context.take_s = "take-1", 10.0
    chained = continuation_request({}, context, 4.0, str(tmp_path), 44100)
    assert chained.upload_path is None and chained.request["src_audio"] == "file:take-1"
    assert (chained.request["repainting_start"], chained.request["repainting_end"]) == (10.0, 14.0)
    assert chained.request["output_region"] == [10.0, 14.0] and chained.offset_s == 10.0
    context.take_s = 17.0  # the take is long now: one ordinary chunk starts a short take again
    assert continuation_request({}, context, 4.0, str(tmp_path), 44100).upload_path is not None


class TakeEngine:
    """An engine client that keeps whole takes: honours output_region/output_sample_rate and answers
    with `take_file_id`, as the engine's fast path does (requests recorded, audio a plain tone)."""

    def __init__(self):
        self.requests, self.uploads, self.cancelled = [], 0, []

    def upload(self, path):
        self.uploads += 1
        return f"upload-{self.uploads}"

    def submit(self, request, priority="interactive"):
        self.requests.append(dict(request))
        return f"job-{len(self.requests)}"

    def wait(self, job_id, timeout=0, on_progress=None):
        request = self.requests[int(job_id.split("-")[1]) - 1]
        result = {"file_id": job_id, "seed": 1, "take_file_id": f"take-{job_id}",
                  "output_region": request.get("output_region"), "sample_rate": request.get("output_sample_rate")}
        return {"state": "done", "results": [result]}

    def download(self, ref, dest):
        import soundfile as sf
        request = self.requests[int(ref.split("-")[1]) - 1]
        start, end = request["output_region"]
        rate = request["output_sample_rate"]
        samples = int(end * rate) - int(start * rate)
        tone = 0.3 * np.sin(np.arange(samples) * 2 * np.pi * 220 / rate)
        sf.write(dest, np.stack([tone, tone]).T, rate)
        return dest

    def cancel(self, job_id):
        self.cancelled.append(job_id)

    def jobs(self):
        return []


def test_jam_chains_the_engines_takes_without_uploading_again(tmp_path, monkeypatch):
    from tests.gui_helpers import make_fake_daw
    monkeypatch.setattr("bridge.jam.engine_takes_region_pcm", lambda: True)
    engine, daw = TakeEngine(), make_fake_daw()
    app = BridgeApp(BridgeConfig(host="none", osc_port=0, output_dir=str(tmp_path / "clips")), engine,
                    adapters={"reaper": daw})
    app.host_state.update("reaper", tempo=120.0, meter=(4, 4), sample_rate=44100, playing=False,
                          region_s=(0.0, 4.0))
    events = []
    session = JamController(app).start({"bars": 2, "lookahead": 4, "mix": 0}, events.append)
    wait_for(lambda: len([e for e in events if e["type"] == "jam_chunk"]) == 4)
    session.stop()
    kinds = [(r["task_type"], r.get("src_audio"), r.get("repainting_start")) for r in engine.requests[:4]]
    assert kinds == [("text2music", None, None), ("repaint", "file:upload-1", 4.0),  # the caption, one upload
                     ("repaint", "file:take-job-2", 8.0), ("repaint", "file:take-job-3", 12.0)]
    assert engine.uploads == 1
    for chunk, insert in zip(session.chunks, daw.inserts):
        check_clip(chunk.path, chunk.start_s, chunk.end_s, 120, 4, 4)
        assert insert["position_s"] == chunk.start_s and insert["track_name"] == "ACE Jam"
    assert [c.start_s for c in session.chunks[:4]] == [4.0, 8.0, 12.0, 16.0]


def test_jam_refuses_bad_settings_and_unknown_tempo():
    app = BridgeApp(BridgeConfig(engine_url="http://127.0.0.1:1", host="none", osc_port=0))
    with pytest.raises(JamError, match="tempo is unknown"):
        JamController(app).start({})
    app.host_state.update("osc", tempo=120.0)
    with pytest.raises(JamError, match="unknown jam setting"):
        JamController(app).start({"barz": 4})
    with pytest.raises(JamError, match="lookahead"):
        JamController(app).start({"lookahead": "many"})
    with pytest.raises(JamError, match="insert 'replace'"):
        JamController(app).start({"insert": "replace"})
    session = JamController(app).start({"mix": "0", "bars": 2.0, "insert": "none"})
    assert (session.render_mix, session.bars, session.insert_mode) == (False, 2, "none")
    session.stop()


def test_lua_insert_named_finds_or_makes_the_jam_track(tmp_path):
    from bridge.reaper.adapter import ReaperMailbox
    from tests.reaper_lua import mock_reaper, start_script

    lua, mock = mock_reaper(tmp_path / "mailbox")
    start_script(lua)
    box = ReaperMailbox(str(tmp_path / "mailbox"))
    clip = tmp_path / "jam.wav"
    clip.write_bytes(b"RIFF")
    for position in ("1.875", "5.625"):
        cmd_id = box.send("insert_named", path=str(clip), position=position, track=-1, new_track=0,
                          track_name="ACE Jam", replace=0, length="3.75")
        mock.now = mock.now + 0.2
        mock.deferred()
        assert box.wait(cmd_id, timeout_s=1)["ok"] == "1"
    tracks = list(mock.tracks.values())
    assert [t.name for t in tracks] == ["Drums", "Keys", "ACE Jam"]  # made once, at the end
    assert sorted(item.D_POSITION for item in tracks[2]["items"].values()) == [1.875, 5.625]


def test_midi_mapping_toggles_jam_and_sketch_is_mappable():
    from bridge.midi import parse_mapping
    app = BridgeApp(BridgeConfig(engine_url="http://127.0.0.1:1", host="none", osc_port=0,
                                 midi_mappings=["note:64=jam", "note:65=sketch"]))  # no engine there
    listener = app._make_midi().listener
    assert [m.action for m in listener.mappings] == ["jam", "sketch"]
    assert parse_mapping("note:64=jam").action == "jam"
    app.host_state.update("osc", tempo=120.0, playing=False)
    events = []
    app.subscribe(events.append)
    app.jam = JamController(app)
    app._midi_action("jam")  # start (no DAW, no engine: the jam starts, then says why it ended)
    wait_for(lambda: any(e["type"] == "jam_state" and e["state"] == "stopped" for e in events))
    assert [e["state"] for e in events if e["type"] == "jam_state"][0] == "running"
