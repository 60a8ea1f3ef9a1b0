"""The control window against a real engine service on loopback (tiny parity checkpoints).

`engine` is the session's in-process engine (tests/conftest.py); the window only fetches results
of jobs created after it opened, so earlier tests' jobs on that engine do not show up here.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine.service.threaded import InProcessEngine
from gui.settings import Settings, load_settings
from tests.gui_helpers import qt_app, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def window(engine, tmp_path):
    qt_app()
    from engine.client import EngineClient
    from gui.main_window import MainWindow
    settings = Settings(engine_url=engine.url, output_dir=str(tmp_path / "output"))
    win = MainWindow(settings, EngineClient(engine.url), settings_path=tmp_path / "gui.json", poll_ms=300)
    win.resize(1280, 860)
    win.show()
    assert wait_for(lambda: win.link.connected is True, 20), "window never connected to the engine"
    yield win
    win.close()


def _states_seen(win) -> list[dict]:
    seen: list[dict] = []
    win.link.job_updated.connect(lambda job: seen.append(dict(job)))
    return seen


def test_generate_from_the_window_shows_progress_then_results(window, tmp_path):
    seen = _states_seen(window)
    window.prompt_panel.caption.setPlainText("short test clip")
    window.prompt_panel.duration.setValue(6.0)  # the engine makes at least 5.12 s (128 latent frames)
    window.prompt_panel.batch.setValue(2)
    window.prompt_panel.task_buttons["generate"].click()

    assert wait_for(lambda: len(window.results_model.items()) == 2, 120), window.statusBar().currentMessage()
    states = [job.get("state") for job in seen]
    assert "running" in states and states[-1] == "done"
    steps = [job["progress"]["step"] for job in seen
             if job.get("state") == "running" and (job.get("progress") or {}).get("stage") == "diffusion"]
    assert steps and steps == sorted(steps)

    job = window.jobs_model.job(window.last_job_id)
    assert job.state == "done" and job.percent() == 100
    for item in window.results_model.items():
        assert os.path.dirname(item.path) == str(tmp_path / "output")
        assert os.path.getsize(item.path) > 1000
        assert item.duration == pytest.approx(6.0, abs=0.05)
        assert item.peaks is not None and item.peaks.shape[1] == 3 and np.abs(item.peaks).max() > 0
        assert item.request["caption"] == "short test clip"
    assert len({item.seed for item in window.results_model.items()}) == 2


def test_cancel_from_the_window_stops_the_running_job(window):
    window.prompt_panel.duration.setValue(30.0)
    window.prompt_panel.steps.setValue(200)
    window.prompt_panel.task_buttons["generate"].click()
    assert wait_for(lambda: _last_job_state(window) == "running", 60)
    window.jobs_panel.cancel_button.click()  # nothing selected: cancels the newest unfinished job
    assert wait_for(lambda: _last_job_state(window) == "cancelled", 60)
    assert window.results_model.rowCount() == 0
    assert wait_for(lambda: "cancelled" in window.statusBar().currentMessage(), 10)  # not "queued" any more


def _last_job_state(window) -> str | None:
    row = window.jobs_model.job(window.last_job_id) if window.last_job_id else None
    return row.state if row is not None else None


def test_a_failing_job_shows_its_error_in_plain_words(window):
    window.prompt_panel.caption.setPlainText("x")
    window.prompt_panel.dit_combo.setCurrentText("acestep-v15-turbo")
    values = window.prompt_panel.values()
    from gui.request_builder import HostValues, build_request
    request = build_request("generate", values, HostValues()).to_dict()
    request["dit"] = "no-such-model"
    window.link.submit(request, on_submitted=window._on_submitted)
    assert wait_for(lambda: _last_job_state(window) in ("done", "failed", "cancelled"), 60)
    row = window.jobs_model.job(window.last_job_id)
    assert row.state == "failed"
    details = window.jobs_model.data(window.jobs_model.index(window.jobs_model.row_of(row.job_id), 4))
    assert "no-such-model" in details and "Traceback" not in details


def test_bad_input_is_reported_without_submitting(window):
    messages: list[str] = []
    window.statusBar().messageChanged.connect(messages.append)
    window.prompt_panel.task_buttons["cover"].click()  # no DAW and no source file
    assert any("src_audio" in m and "source" in m for m in messages)
    window.prompt_panel.source.edit.setText("/no/such/file.wav")
    window.prompt_panel.task_buttons["cover"].click()  # the upload fails on the worker thread
    assert wait_for(lambda: any("/no/such/file.wav" in m for m in messages), 10)
    assert window.last_job_id is None


def test_engine_disconnect_shows_a_banner_and_reconnects(tmp_path):
    qt_app()
    from engine.client import EngineClient
    from gui.main_window import MainWindow
    from tests.gui_helpers import StandInPipeline
    server = InProcessEngine(tmp_path / "results", pipeline=StandInPipeline())
    settings = Settings(engine_url=server.url, output_dir=str(tmp_path / "output"))
    win = MainWindow(settings, EngineClient(server.url, timeout=5), settings_path=tmp_path / "gui.json",
                     poll_ms=200)
    try:
        win.show()
        assert wait_for(lambda: win.banner.isVisible(), 20)
        assert "not answering" in win.banner.text()
        server.start()
        assert wait_for(lambda: not win.banner.isVisible(), 20)
        assert win.host_panel.adapter_connected("engine")
        server.stop()
        assert wait_for(lambda: win.banner.isVisible(), 20)
        server.start()
        assert wait_for(lambda: win.link.connected is True and not win.banner.isVisible(), 20)
    finally:
        win.close()
        server.stop()


def test_screenshot_of_the_main_window_is_a_real_picture(window, tmp_path):
    path = tmp_path / "window.png"
    image = window.grab()
    assert image.save(str(path), "PNG")
    from PyQt6.QtGui import QImage
    loaded = QImage(str(path))
    assert (loaded.width(), loaded.height()) == (1280, 860)
    pixels = [loaded.pixelColor(x, y).lightness() for x in range(0, 1280, 16) for y in range(0, 860, 16)]
    assert np.var(pixels) > 50  # not a blank fill
    assert np.mean(pixels) < 110  # and dark, as the theme says


def test_settings_are_saved_when_the_window_closes(window, tmp_path):
    window.results_panel.device_changed.emit("")  # any settings change path writes the file
    window.close()
    saved = load_settings(tmp_path / "gui.json")
    assert saved.engine_url == window.settings.engine_url
    assert saved.window_geometry


def test_autogen_keeps_making_variants_until_switched_off(window):
    window.prompt_panel.caption.setPlainText("autogen clip")
    window.prompt_panel.duration.setValue(1.0)
    window.jobs_panel.autogen.setChecked(True)
    window.prompt_panel.task_buttons["generate"].click()
    # the first job and at least two AutoGen follow-ups deliver results without further clicks
    assert wait_for(lambda: len(window.results_model.items()) >= 3, 120), window.statusBar().currentMessage()
    jobs = {item.job_id for item in window.results_model.items()}
    assert len(jobs) >= 3
    assert all(item.request.get("caption") == "autogen clip" for item in window.results_model.items())

    window.jobs_panel.autogen.setChecked(False)
    assert wait_for(lambda: not any(row.autogen for row in window.jobs_model.active_jobs())
                    and not window.jobs_model.active_jobs(), 60)
    autogen_rows = [window.jobs_model.job_at(n) for n in range(window.jobs_model.rowCount())]
    expected = sum(len(row.results) for row in autogen_rows if row.state == "done"
                   and row.request.get("caption") == "autogen clip")
    assert wait_for(lambda: len(window.results_model.items()) == expected, 30)  # every finished take fetched
    settled = len(window.results_model.items())
    wait_for(lambda: False, 1.5)
    assert len(window.results_model.items()) == settled  # nothing new after AutoGen is off
    assert not window.jobs_model.active_jobs()


def test_a_take_through_the_embedded_bridge_lists_the_grid_clip_and_inserts_it(engine, tmp_path):
    qt_app()
    from bridge.app import BridgeApp
    from bridge.config import BridgeConfig
    from engine.client import EngineClient
    from engine.process import free_port
    from gui.main_window import MainWindow
    from tests.gui_helpers import make_fake_daw

    daw = make_fake_daw()
    output = tmp_path / "clips"
    config = BridgeConfig(engine_url=engine.url, host="none", osc_port=free_port(), output_dir=str(output))
    bridge = BridgeApp(config, EngineClient(engine.url), adapters={"reaper": daw})
    bridge.start()
    settings = Settings(engine_url=engine.url, output_dir=str(output))
    win = MainWindow(settings, EngineClient(engine.url), bridge=bridge, settings_path=tmp_path / "gui.json",
                     poll_ms=300)
    try:
        win.show()
        # the DAW reports its session: the panel follows
        bridge.host_state.update("reaper", tempo=120.0, meter=(4, 4), key="D minor", region_s=(4.0, 8.0),
                                 project_name="song", sample_rate=44100)
        assert wait_for(lambda: win.host_panel.values().selection == (4.0, 8.0)
                        and win.host_panel.adapter_connected("reaper") and win.link.connected, 20)
        assert win.host_panel.selection_label.text().startswith("3.1 – 5.1")

        win.prompt_panel.caption.setPlainText("bridge take")
        # With a DAW connected a task goes through the bridge. Generate keeps this test quick; the
        # bridge's own tests cover repaint, continue and stems on the grid.
        win.prompt_panel.task_buttons["generate"].click()
        assert wait_for(lambda: win.results_model.rowCount() == 1, 120), win.statusBar().currentMessage()
        clip = win.results_model.item(0)
        assert clip.path.startswith(str(output)) and clip.position_s == pytest.approx(4.0)
        assert clip.duration == pytest.approx(4.0, abs=0.01) and clip.sample_rate == 44100
        assert clip.request.get("caption") == "bridge take"
        assert daw.inserts and daw.inserts[0]["position_s"] == pytest.approx(4.0)

        win.results_panel.list.setCurrentIndex(win.results_model.index(0))
        win.results_panel.insert_button.click()
        assert wait_for(lambda: len(daw.inserts) == 2, 20)
        assert daw.inserts[1]["path"] == clip.path and daw.inserts[1]["position_s"] == pytest.approx(4.0)
    finally:
        win.close()
        bridge.stop()


def test_model_choice_loads_on_the_engine_and_shows_what_is_loaded(window):
    panel = window.prompt_panel
    assert wait_for(lambda: panel.dit_combo.findText("acestep-v15-base") >= 0, 20)  # listed by /v1/models
    try:
        panel.dit_combo.setCurrentText("acestep-v15-base")
        panel.lm_combo.setCurrentText("none")
        panel.load_button.click()
        assert wait_for(lambda: window.link.last_health.get("dit") == "acestep-v15-base", 120), \
            window.statusBar().currentMessage()
        assert wait_for(lambda: "acestep-v15-base" in panel.loaded_label.text(), 10)
    finally:
        panel.dit_combo.setCurrentText("acestep-v15-turbo")
        panel.load_button.click()
        assert wait_for(lambda: window.link.last_health.get("dit") == "acestep-v15-turbo", 120)


def test_changing_the_engine_url_in_settings_reconnects(window, engine, tmp_path):
    import dataclasses
    window.apply_settings(dataclasses.replace(window.settings, engine_url="http://127.0.0.1:1"))
    assert wait_for(lambda: window.banner.isVisible() and window.link.connected is False, 20)
    window.apply_settings(dataclasses.replace(window.settings, engine_url=engine.url))
    assert wait_for(lambda: window.link.connected is True and not window.banner.isVisible(), 20)
    assert load_settings(tmp_path / "gui.json").engine_url == engine.url


def test_direct_repaint_of_a_source_file_marks_the_region_on_the_waveform(window):
    from tests.conftest import PARITY
    source = PARITY / "cases" / "audio" / "source.wav"
    panel = window.prompt_panel
    panel.caption.setPlainText("repaint the middle")
    panel.source.edit.setText(str(source))
    panel.region_start.setValue(2.0)
    panel.region_end.setValue(5.0)
    panel.steps.setValue(2)  # the region marking is under test, not the sampler
    panel.task_buttons["repaint"].click()
    assert wait_for(lambda: _last_job_state(window) in ("done", "failed"), 120), window.statusBar().currentMessage()
    row = window.jobs_model.job(window.last_job_id)
    assert row.state == "done", row.error
    assert row.request["src_audio"].startswith("file:")  # the window uploaded the local file
    assert wait_for(lambda: window.results_model.rowCount() == 1, 30)
    item = window.results_model.item(0)
    assert item.task == "repaint" and item.region == (2.0, 5.0)
