"""Whole flows: simulated DAW on loopback UDP -> bridge -> engine HTTP API (echo pipeline) -> clip back in the DAW."""

import os

import numpy as np
import pytest

from bridge.app import BridgeApp
from bridge.config import BridgeConfig
from bridge.wavchunks import read_wav
from simulators import wait_for
from simulators.ableton import SimulatedAbletonOSC
from simulators.osc import OscPeer, free_udp_port
from simulators.pipelines import MARK_HZ, echo_engine
from simulators.reaper import WAKE_ACTION, SimulatedReaper, timecode

HOST_SR = 44100
BAR_S = 3 * 60 / 96  # one 3/4 bar at 96 BPM = 1.875 s
REGION = (2 * BAR_S, 10 * BAR_S)  # bars 3-10: 8 bars = 15 s
CLIP_FRAMES = 661500  # 15 s at 44.1 kHz


def best_shift(clip, reference_start_s, scale, sr=HOST_SR, margin=2000):
    """Which sample shift of the project timecode matches the clip best (0 = sample-exact)."""
    errors = {}
    for shift in range(-3, 4):
        ref = scale * timecode(reference_start_s + shift / sr, clip.shape[1], sr)
        errors[shift] = float(np.max(np.abs(clip[:, margin:-margin] - ref[:, margin:-margin])))
    return min(errors, key=errors.get), errors


def dominant_hz(signal, sr=HOST_SR):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return np.argmax(spectrum) * sr / len(signal)


def start_reaper_bridge(tmp_path, engine, **config_changes):
    """A simulated REAPER (woken over OSC) and a bridge talking to it and to `engine`."""
    reaper = SimulatedReaper(str(tmp_path / "mailbox"), sample_rate=HOST_SR)
    config = BridgeConfig(engine_url=engine.url, host="reaper", osc_port=0, reaper_listen_port=0,
                          reaper_port=reaper.osc.port, reaper_wake_action=WAKE_ACTION,
                          reaper_mailbox=reaper.mailbox, output_dir=str(tmp_path / "clips"),
                          request_defaults={"caption": "warm keys"}, render_timeout_s=5, insert_timeout_s=5,
                          **config_changes)
    app = BridgeApp(config)
    app.start()
    reaper.bridge_port = app.adapters["reaper"].listen_port
    return app, reaper


@pytest.fixture
def reaper_flow(tmp_path):
    with echo_engine(tmp_path) as engine:
        app, reaper = start_reaper_bridge(tmp_path, engine)
        reaper.set_tempo(96, 3, 4)
        reaper.select(*REGION)
        wait_for(lambda: app.host_state.region() is not None and app.host_state.get("sample_rate") == HOST_SR
                   and app.host_state.get("meter") == (3, 4))
        client = OscPeer()
        try:
            yield app, reaper, client, engine
        finally:
            client.close()
            reaper.close()
            app.stop()


def _check_clip(path, position_s, frames, beats=24):
    wav = read_wav(path)
    assert wav.sample_rate == HOST_SR and wav.length_samples == frames
    assert wav.acid.tempo == pytest.approx(96) and (wav.acid.meter_num, wav.acid.meter_den) == (3, 4)
    assert wav.acid.num_beats == beats and wav.acid.root_note == 57  # A minor from the project key
    assert wav.bext.time_reference == round(position_s * HOST_SR)
    return wav


def test_reaper_repaint_eight_bars_of_three_four(reaper_flow):
    app, reaper, client, engine = reaper_flow
    client.send(app.commands.port, "/acecomp/repaint", '{"seed": 7}')
    job = client.wait_for("/acecomp/job")
    assert job[0] == "repaint"
    result = client.wait_for("/acecomp/result")
    assert client.all("/acecomp/progress"), "progress replies before the result"
    assert result[0] == job[1] and result[3] == 1
    assert client.wait_for("/acecomp/done")[1] == "done"

    # REAPER rendered a padded, bar-aligned context window around the selection
    render = reaper.renders[0]
    assert render["start"] < REGION[0] and render["end"] > REGION[1] and render["source"] == "master"
    request = engine.pipeline.requests[0]
    assert request.task_type == "repaint" and request.bpm == 96 and request.timesignature == "3"
    assert request.keyscale == "A minor" and request.seed == 7
    assert request.repainting_end - request.repainting_start == pytest.approx(15, abs=1e-4)

    inserted = reaper.inserted[0]
    assert inserted["position"] == pytest.approx(REGION[0], abs=1e-9)
    assert inserted["replace"] and not inserted["new_track"] and inserted["track"] == -1
    assert inserted["path"] == result[1] and result[1].endswith("Demo_Song-repaint-3-7.wav")
    wav = _check_clip(inserted["path"], REGION[0], CLIP_FRAMES)
    middle = wav.audio[0, 10000:-10000]
    assert dominant_hz(middle) == pytest.approx(MARK_HZ, abs=2)  # the engine's new audio, not the old


def test_reaper_repaint_after_removing_the_time_selection_is_refused(reaper_flow):
    app, reaper, client, engine = reaper_flow
    reaper.clear_selection()
    wait_for(lambda: app.host_state.region() is None)
    client.send(app.commands.port, "/acecomp/repaint")
    error = client.wait_for("/acecomp/error")
    assert error[0] == "repaint" and "no region selected" in error[1]
    assert not client.all("/acecomp/job") and not engine.pipeline.requests and not reaper.renders


def test_reaper_continue_places_new_bars_after_the_region(reaper_flow):
    app, reaper, client, engine = reaper_flow
    job_id = app.run_action("continue", {"bars": 8})
    record = app.wait_action(app.action_for_job(job_id).id)
    assert record.state == "done", record.error
    request = engine.pipeline.requests[0]
    assert request.task_type == "repaint"
    # only existing audio was rendered; the engine outpaints the 8 new bars
    assert reaper.renders[0]["end"] == pytest.approx(REGION[1], abs=1e-4)
    inserted = reaper.inserted[0]
    assert inserted["position"] == pytest.approx(REGION[1], abs=1e-9)
    wav = _check_clip(inserted["path"], REGION[1], CLIP_FRAMES)
    assert dominant_hz(wav.audio[0, 10000:-10000]) == pytest.approx(MARK_HZ, abs=2)
    assert "-continue-11-" in inserted["path"]


def test_reaper_stems_one_new_track_each_sample_aligned(reaper_flow):
    app, reaper, client, engine = reaper_flow
    job_id = app.run_action("stems", {"stems": "drums,bass"})
    record = app.wait_action(app.action_for_job(job_id).id)
    assert record.state == "done", record.error
    assert [r.track_name for r in engine.pipeline.requests] == ["drums", "bass"]
    assert {r.dit for r in engine.pipeline.requests} == {"acestep-v15-base"}  # extract needs a base DiT
    assert [i["track_name"] for i in reaper.inserted] == ["drums", "bass"]
    assert {i["group"] for i in reaper.inserted} == {record.id}  # the script keeps one action's stems in order
    for inserted in reaper.inserted:
        assert inserted["new_track"] and inserted["position"] == pytest.approx(REGION[0], abs=1e-9)
        wav = _check_clip(inserted["path"], REGION[0], CLIP_FRAMES)
        # extract in the echo pipeline = half the source: the clip must line up with the project to the sample
        shift, errors = best_shift(wav.audio, REGION[0], 0.5)
        assert shift == 0, errors


def test_reaper_generate_without_source(reaper_flow):
    app, reaper, client, engine = reaper_flow
    job_id = app.run_action("generate", {"caption": "ambient pad"})
    record = app.wait_action(app.action_for_job(job_id).id)
    assert record.state == "done", record.error
    assert not reaper.renders
    request = engine.pipeline.requests[0]
    assert request.task_type == "text2music" and request.duration == pytest.approx(15)
    _check_clip(reaper.inserted[0]["path"], REGION[0], CLIP_FRAMES)


def test_reaper_half_finished_render_is_an_error_and_bridge_survives(reaper_flow):
    app, reaper, client, engine = reaper_flow
    reaper.render_mode = "truncated"
    client.send(app.commands.port, "/acecomp/repaint")
    error = client.wait_for("/acecomp/error")
    assert error[0] == "repaint" and "incomplete" in error[1]
    reaper.render_mode = "ok"
    client.send(app.commands.port, "/acecomp/ping")
    client.wait_for("/acecomp/pong")


def test_reaper_gone_render_times_out_with_a_clear_error(reaper_flow):
    app, reaper, client, engine = reaper_flow
    reaper.render_mode = "silent"
    app.config.render_timeout_s = 0.5
    client.send(app.commands.port, "/acecomp/cover")
    error = client.wait_for("/acecomp/error")
    assert "did not answer" in error[1] and "ace_companion.lua" in error[1]


def test_ableton_repaint_from_source_file_inserted_by_remote_script(tmp_path):
    import soundfile as sf
    song = timecode(0.0, 30 * HOST_SR, HOST_SR)
    source = tmp_path / "export.wav"
    sf.write(source, song.T, HOST_SR, subtype="FLOAT")
    listen = free_udp_port()
    clips = tmp_path / "clips"
    live = SimulatedAbletonOSC(reply_port=listen, allowed_root=str(clips))
    with echo_engine(tmp_path) as engine:
        config = BridgeConfig(engine_url=engine.url, host="ableton", osc_port=0, ableton_port=live.port,
                              ableton_listen_port=listen, ableton_insert_port=live.insert_port,
                              output_dir=str(clips), source_file=str(source), project="Live Set")
        app = BridgeApp(config)
        app.start()
        try:
            wait_for(lambda: app.adapters_status()["ableton"]["connected"] and app.host_state.region() is not None
                       and app.host_state.get("key") == "A minor" and app.host_state.get("meter") is not None)
            assert app.host_state.get("meter") == (3, 4)
            live.set("tempo", 96.0)  # pushed by the listener
            job_id = app.run_action("extract", {"track_name": "vocals"})
            record = app.wait_action(app.action_for_job(job_id).id)
            assert record.state == "done", record.error
            new_track = live.song.tracks[-1]
            assert new_track.name == "vocals"
            clip = new_track.arrangement_clips[0]
            assert clip.start_time == pytest.approx(6.0) and clip.warping is False  # loop start in beats
            wav = _check_clip(clip.file_path, REGION[0], CLIP_FRAMES)
            shift, errors = best_shift(wav.audio, REGION[0], 0.5)
            assert shift == 0, errors
        finally:
            app.stop()
            live.close()


def test_reaper_gone_at_insert_time_offers_the_clip_for_dragging(reaper_flow):
    app, reaper, client, engine = reaper_flow
    reaper.render_mode = "silent"  # the script stopped answering
    app.config.insert_timeout_s = 0.5
    client.send(app.commands.port, "/acecomp/generate")
    result = client.wait_for("/acecomp/result")
    assert result[3] == 0 and "did not answer" in result[4] and "drag" in result[4]
    assert client.wait_for("/acecomp/done")[1] == "done"
    assert os.path.exists(result[1])  # the clip is there to drag


def test_cancel_over_osc_stops_the_running_action(tmp_path):
    from simulators.pipelines import EchoPipeline
    with echo_engine(tmp_path, EchoPipeline(steps=200, step_s=0.05)) as engine:
        config = BridgeConfig(engine_url=engine.url, host="none", osc_port=0, output_dir=str(tmp_path / "clips"))
        app = BridgeApp(config)
        app.start()
        client = OscPeer()
        try:
            for address, args in (("/acecomp/tempo", (96.0,)), ("/acecomp/meter", (3, 4)),
                                  ("/acecomp/region", REGION)):
                client.send(app.commands.port, address, *args)
            wait_for(lambda: len(client.all("/acecomp/ok")) == 3)
            client.send(app.commands.port, "/acecomp/generate")
            job_id = client.wait_for("/acecomp/job")[1]
            client.wait_for("/acecomp/progress")
            client.send(app.commands.port, "/acecomp/cancel")
            assert client.wait_for("/acecomp/ok", predicate=lambda a: a[0] == "cancel")[1] == job_id
            assert client.wait_for("/acecomp/done")[1] == "cancelled"
            assert not client.all("/acecomp/result")
        finally:
            client.close()
            app.stop()
