"""Bridge flows against the real engine on the tiny parity checkpoints.

The engine is the session's in-process engine (tests/conftest.py: the real HTTP service over the
session pipeline); the engine as a process is covered by test_gui_commands and
test_service_pipeline. A simulated REAPER (and, for repaint, a simulated AbletonOSC with our Remote
Script) selects 2 bars at 96 BPM in 3/4 and the clip that comes back is checked: position, length
in samples at 44.1 kHz, acid tempo/meter, bext time reference. A task the engine refuses fails the
test.

Source tasks spend most of their time in the tiny VAE's encoder on CPU, so these flows use the
shortest selection the engine accepts (3.75 s, over its 3 s minimum) and a context of 5.2 s (the
model's 128-frame floor); the echo-engine flows in test_bridge_flows.py cover the same bridge paths
on 8 bars with a stand-in pipeline.
"""

import pytest

from bridge.app import BridgeApp
from bridge.config import BridgeConfig
from simulators import wait_for
from simulators.ableton import SimulatedAbletonOSC
from simulators.osc import free_udp_port
from simulators.reaper import SimulatedReaper, timecode
from tests.test_bridge_flows import BAR_S, HOST_SR, _check_clip

pytestmark = pytest.mark.slow

REGION = (2 * BAR_S, 4 * BAR_S)  # bars 3-4: 3.75 s
CLIP_FRAMES = round(2 * BAR_S * HOST_SR)
BEATS = 6
MIN_CONTEXT_S = 5.2
DEFAULTS = {"caption": "slow waltz on felt piano", "inference_steps": 2, "seed": 5}


@pytest.fixture
def flow(engine, tmp_path):
    config = BridgeConfig(engine_url=engine.url, host="reaper", osc_port=0, reaper_listen_port=0,
                          reaper_mailbox=str(tmp_path / "mailbox"), output_dir=str(tmp_path / "clips"),
                          request_defaults=DEFAULTS, min_context_s=MIN_CONTEXT_S,
                          render_timeout_s=10, insert_timeout_s=10, job_timeout_s=600)
    app = BridgeApp(config)
    app.start()
    reaper = SimulatedReaper(config.reaper_mailbox, app.adapters["reaper"].listen_port, HOST_SR)
    reaper.set_tempo(96, 3, 4)
    reaper.select(*REGION)
    wait_for(lambda: app.host_state.region() is not None and app.host_state.get("meter") == (3, 4)
               and app.host_state.get("sample_rate") == HOST_SR)
    try:
        yield app, reaper
    finally:
        reaper.close()
        app.stop()


def _run(app, action, overrides=None):
    job_id = app.run_action(action, overrides)
    record = app.wait_action(app.action_for_job(job_id).id, timeout=900)
    if record.state != "done":
        pytest.fail(f"{action} failed: {record.error or record.state}")
    return record


@pytest.mark.parametrize("action,overrides,position", [
    ("generate", None, REGION[0]),
    ("repaint", None, REGION[0]),
    ("continue", {"bars": 2}, REGION[1]),
])
def test_real_engine_clip_on_the_grid(flow, action, overrides, position):
    app, reaper = flow
    record = _run(app, action, overrides)
    assert record.clips[0]["inserted"], record.clips[0]["message"]
    inserted = reaper.inserted[-1]
    assert inserted["position"] == pytest.approx(position, abs=1e-9)
    assert record.clips[0]["length_samples"] == CLIP_FRAMES
    wav = _check_clip(inserted["path"], position, CLIP_FRAMES, BEATS)
    assert abs(wav.audio).max() > 0  # the engine made sound


def test_real_engine_stems(flow):
    app, reaper = flow
    _run(app, "stems", {"stems": "drums,bass"})
    assert [i["track_name"] for i in reaper.inserted] == ["drums", "bass"]
    for inserted in reaper.inserted:
        assert inserted["new_track"]
        _check_clip(inserted["path"], REGION[0], CLIP_FRAMES, BEATS)


def test_real_engine_ableton_repaint_inserted_by_remote_script(engine, tmp_path):
    """Live has no render API: the bridge reads a configured source file, the engine repaints the
    loop-brace region, and the Remote Script inserts the clip on the arrangement at the loop start."""
    import soundfile as sf
    source = tmp_path / "export.wav"
    sf.write(source, timecode(0.0, 12 * HOST_SR, HOST_SR).T, HOST_SR, subtype="FLOAT")
    listen = free_udp_port()
    clips = tmp_path / "clips"
    live = SimulatedAbletonOSC(reply_port=listen, allowed_root=str(clips))
    live.song_props["loop_length"] = float(BEATS)  # the loop brace spans bars 3-4 (it starts at beat 6)
    config = BridgeConfig(engine_url=engine.url, host="ableton", osc_port=0, ableton_port=live.port,
                          ableton_listen_port=listen, ableton_insert_port=live.insert_port,
                          output_dir=str(clips), source_file=str(source), project="Live Set",
                          request_defaults=DEFAULTS, min_context_s=MIN_CONTEXT_S, job_timeout_s=600)
    app = BridgeApp(config)
    app.start()
    try:
        wait_for(lambda: app.adapters_status()["ableton"]["connected"] and app.host_state.region() is not None
                   and app.host_state.get("meter") == (3, 4))
        live.set("tempo", 96.0)
        wait_for(lambda: app.host_state.get("tempo") == 96.0)
        _run(app, "repaint")
        inserted = [c for t in live.song.tracks for c in t.arrangement_clips]
        assert len(inserted) == 1
        clip = inserted[0]
        assert clip.start_time == pytest.approx(6.0) and clip.warping is False  # loop start, in beats
        wav = _check_clip(clip.file_path, REGION[0], CLIP_FRAMES, BEATS)
        assert abs(wav.audio).max() > 0
    finally:
        app.stop()
        live.close()
