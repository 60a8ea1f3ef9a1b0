"""The bridge's hot path: unchanged audio is neither rendered nor uploaded again, the REAPER
script is woken over OSC, results can come back as region PCM, and clips still land
sample-exact and bar-exact (3/4, and across a tempo/meter change)."""

import os
import threading

import numpy as np
import pytest
import soundfile as sf

from bridge.actions import ClipPlan, HostView, plan_action
from bridge.app import BridgeApp
from bridge.config import BridgeConfig
from bridge.grid import Region, TempoMap
from bridge.jobs import JobFollower, region_pcm
from bridge.reaper.folder_events import FolderEvents
from bridge.wavchunks import read_wav
from simulators import wait_for
from simulators.pipelines import echo_engine
from simulators.reaper import timecode
from tests.test_bridge_flows import HOST_SR, best_shift, start_reaper_bridge

BAR_S = 3 * 60 / 96  # 3/4 at 96 BPM
REGION = (2 * BAR_S, 10 * BAR_S)


def uploads(engine) -> int:
    return len(engine.service.store.upload_ids())


def run(app, action, **overrides):
    job_id = app.run_action(action, overrides)
    record = app.wait_action(app.action_for_job(job_id).id)
    assert record.state == "done", record.error
    return record


@pytest.fixture
def reaper_3_4(tmp_path):
    with echo_engine(tmp_path) as engine:
        app, reaper = start_reaper_bridge(tmp_path, engine)
        try:
            reaper.set_tempo(96, 3, 4)
            reaper.select(*REGION)
            wait_for(lambda: app.host_state.region() is not None and app.host_state.get("meter") == (3, 4)
                       and app.host_state.get("sample_rate") == HOST_SR)
            yield app, reaper, engine
        finally:
            reaper.close()
            app.stop()


def test_second_repaint_of_unchanged_audio_renders_and_uploads_nothing(reaper_3_4):
    app, reaper, engine = reaper_3_4
    run(app, "cover", insert="none")
    assert len(reaper.renders) == 1 and uploads(engine) == 1
    second = run(app, "cover", insert="none")
    assert len(reaper.renders) == 1 and uploads(engine) == 1  # no render, no upload
    first_request, second_request = engine.pipeline.requests
    assert first_request.src_audio == second_request.src_audio  # the same engine file
    assert "upload_s" not in second.timings and reaper.wakes >= 2  # the script was woken, not polled
    # the clip made from the cached source still lines up with the project to the sample
    wav = read_wav(second.clips[0]["path"])
    shift, errors = best_shift(wav.audio, REGION[0], -1.0)
    assert shift == 0, errors
    assert wav.bext.time_reference == round(REGION[0] * HOST_SR)

    reaper.edit()  # the musician changes something: render and upload again
    run(app, "cover", insert="none")
    assert len(reaper.renders) == 2 and uploads(engine) == 2


def test_an_inserted_clip_changes_the_project_so_the_next_action_renders_again(reaper_3_4):
    app, reaper, engine = reaper_3_4
    run(app, "cover")  # inserted: the project changed
    run(app, "cover")
    assert len(reaper.renders) == 2


def test_an_expired_upload_is_sent_again_from_the_bridges_copy(reaper_3_4):
    app, reaper, engine = reaper_3_4
    run(app, "cover", insert="none")
    (file_id,) = engine.service.store.upload_ids()
    assert engine.service.prune_uploads(ttl_s=0.0, now=float("inf")) == [file_id]  # the engine forgot it
    run(app, "cover", insert="none")
    assert len(reaper.renders) == 1 and uploads(engine) == 1
    assert engine.pipeline.requests[1].src_audio != engine.pipeline.requests[0].src_audio


def test_clips_land_bar_exact_across_a_tempo_and_meter_change(tmp_path):
    """3/4 at 96 BPM until bar 17, then 4/4 at 120 (2 s per bar)."""
    change_s = 16 * BAR_S
    with echo_engine(tmp_path) as engine:
        app, reaper = start_reaper_bridge(tmp_path, engine)
        try:
            reaper.set_tempo_map([(0.0, 96, 3, 4), (change_s, 120, 4, 4)])
            reaper.select(14 * BAR_S, change_s + 2 * 2.0)  # bars 15-18: two of 3/4, two of 4/4
            wait_for(lambda: app.host_state.region() is not None and app.host_state.get("sample_rate") == HOST_SR
                       and len(app.host_state.get("tempo_map") or []) == 2)
            across = run(app, "cover", insert="none").clips[0]
            after = run(app, "cover", insert="none", region=[change_s + 2.0, change_s + 5 * 2.0]).clips[0]
        finally:
            reaper.close()
            app.stop()
    for clip, start_s, end_s, meter, bpm in ((across, 14 * BAR_S, change_s + 4.0, (3, 4), 96),
                                             (after, change_s + 2.0, change_s + 10.0, (4, 4), 120)):
        wav = read_wav(clip["path"])
        assert wav.bext.time_reference == round(start_s * HOST_SR)
        assert wav.length_samples == round(end_s * HOST_SR) - round(start_s * HOST_SR)
        assert (wav.acid.meter_num, wav.acid.meter_den) == meter and wav.acid.tempo == pytest.approx(bpm)
        shift, errors = best_shift(wav.audio, start_s, -1.0)
        assert shift == 0, errors
    assert after["bar"] == 18


def test_an_unchanged_export_file_is_not_uploaded_again(tmp_path):
    source = tmp_path / "export.wav"
    sf.write(source, timecode(0.0, 30 * HOST_SR, HOST_SR).T, HOST_SR, subtype="FLOAT")
    with echo_engine(tmp_path) as engine:
        config = BridgeConfig(engine_url=engine.url, host="none", osc_port=0, output_dir=str(tmp_path / "clips"),
                              source_file=str(source), insert_mode="none", sample_rate=HOST_SR)
        app = BridgeApp(config)
        app.host_state.update("osc", tempo=96.0, meter=(3, 4), region_s=REGION)
        run(app, "extract", track_name="vocals")
        run(app, "extract", track_name="vocals")
        assert uploads(engine) == 1
        sf.write(source, timecode(0.0, 30 * HOST_SR, HOST_SR).T * 0.5, HOST_SR, subtype="FLOAT")  # re-exported
        os.utime(source, ns=(os.stat(source).st_atime_ns, os.stat(source).st_mtime_ns + 1_000_000))
        run(app, "extract", track_name="vocals")
        assert uploads(engine) == 2
        app.stop()


# ---------------------------------------------------------------- results as region PCM
class FakeEngine:
    """Serves one prepared result file for `download`."""

    def __init__(self, audio, sample_rate):
        self.audio, self.sample_rate = audio, sample_rate

    def download(self, ref, dest):
        sf.write(dest, self.audio.T, self.sample_rate, subtype="FLOAT")
        return dest


def test_region_pcm_results_are_written_as_they_come_and_window_results_are_cut(tmp_path):
    config = BridgeConfig(output_dir=str(tmp_path / "clips"), fade_ms=0.0)
    view = HostView(tempo_map=TempoMap.constant(96, 3, 4), region=Region(*REGION), sample_rate=HOST_SR,
                    project_name="Song", can_render=True)
    plan = plan_action("cover", {}, view, config)
    clip: ClipPlan = plan.clips[0]
    clip_samples = clip.region.samples(HOST_SR)

    region_audio = timecode(REGION[0], clip_samples, HOST_SR)
    result = {"file_id": "r", "seed": 1, "output_region": [clip.region.start_s - clip.window_start_s,
                                                           clip.region.end_s - clip.window_start_s],
              "sample_rate": HOST_SR}
    assert region_pcm(result, HOST_SR)
    follower = JobFollower(FakeEngine(region_audio, HOST_SR), config, lambda *a: None, lambda *a: (False, None, ""))
    timings = {}
    path, length = follower.make_clip(plan, clip, "job1", result, timings)
    wav = read_wav(path)
    assert length == clip_samples and np.allclose(wav.audio, region_audio, atol=1e-4)

    # region PCM at 48 kHz from an engine that does not label it: recognised by its length
    unlabelled = {"file_id": "u", "seed": 3, "sample_rate": 48000}
    follower = JobFollower(FakeEngine(timecode(REGION[0], clip.region.samples(48000), 48000), 48000), config,
                           lambda *a: None, lambda *a: (False, None, ""))
    path, length = follower.make_clip(plan, clip, "job3", unlabelled, timings)
    shift, errors = best_shift(read_wav(path).audio, REGION[0], 1.0)
    assert length == clip_samples and shift == 0, errors

    window_samples = round((clip.region.end_s - clip.window_start_s + 2.0) * 48000)
    window_audio = timecode(clip.window_start_s, window_samples, 48000)
    window_result = {"file_id": "w", "seed": 2, "sample_rate": 48000}
    assert not region_pcm(window_result, HOST_SR)
    follower = JobFollower(FakeEngine(window_audio, 48000), config, lambda *a: None, lambda *a: (False, None, ""))
    path, length = follower.make_clip(plan, clip, "job2", window_result, timings)
    assert length == clip_samples
    shift, errors = best_shift(read_wav(path).audio, REGION[0], 1.0)
    assert shift == 0, errors


# ---------------------------------------------------------------- waiting without polling
def test_folder_events_wake_on_a_renamed_reply(tmp_path):
    with FolderEvents(str(tmp_path)) as events:
        def reply():
            (tmp_path / "r.tmp").write_text("ok=1\n")
            os.replace(tmp_path / "r.tmp", tmp_path / "cmd-1.done")
        threading.Thread(target=reply).start()
        while not (tmp_path / "cmd-1.done").exists():
            events.wait(30.0)  # returns on the rename (Linux inotify), or after a few ms elsewhere
    assert (tmp_path / "cmd-1.done").read_text() == "ok=1\n"


def test_engine_prunes_only_uploads_no_job_needs(tmp_path):
    from engine.service.core import EngineService
    from simulators.pipelines import EchoPipeline
    service = EngineService(EchoPipeline(), tmp_path / "results", log=lambda line: None)
    ids = []
    for n in range(2):
        file_id = f"{n:032x}"
        path = service.store.new_upload_path(file_id, "a.wav")
        sf.write(path, np.zeros((4800, 2), np.float32), 48000)
        service.store.save_upload_meta(file_id, {"id": file_id, "file": path.name, "created_at": 0.0})
        ids.append(file_id)
    service.submit({"task_type": "cover", "src_audio": f"file:{ids[0]}"})  # queued: needed (worker not started)
    assert service.prune_uploads(ttl_s=60.0, now=1000.0) == [ids[1]]
    assert service.store.upload_ids() == [ids[0]]
