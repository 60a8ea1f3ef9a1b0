"""Control window pieces without an engine: settings, models, peaks, request building, host panel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.request import RequestError
from gui.request_builder import HostValues, PromptValues, build_request, parse_candidates, prompt_fields
from gui.settings import CONFIG_DIR_ENV, Settings, default_settings_path, load_settings, save_settings
from gui.waveform import compute_peaks
from tests.gui_helpers import qt_app


# ------------------------------------------------------------------ settings
def test_settings_round_trip_through_the_json_file(tmp_path):
    path = tmp_path / "cfg" / "gui.json"
    original = Settings(engine_url="http://10.0.0.2:9000", engine_token="s3cret", osc_command_port=9100,
                        midi_in_port="IAC Bus 1", output_dir=str(tmp_path / "out"), audio_device="Speakers")
    save_settings(original, path)
    assert load_settings(path) == original


def test_settings_missing_or_broken_file_gives_defaults_and_wrong_types_are_ignored(tmp_path):
    assert load_settings(tmp_path / "nope.json") == Settings()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    assert load_settings(broken) == Settings()
    typed = tmp_path / "typed.json"
    typed.write_text(json.dumps({"osc_command_port": "ninety", "engine_url": "http://x:1", "extra": 1}))
    loaded = load_settings(typed)
    assert loaded.osc_command_port == Settings().osc_command_port
    assert loaded.engine_url == "http://x:1"


def test_settings_location_follows_the_config_dir_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    assert default_settings_path() == tmp_path / "gui.json"
    save_settings(Settings(host="reaper"))
    assert load_settings().host == "reaper"


# ------------------------------------------------------------------- peaks
def test_peaks_hold_min_max_and_rms_of_each_column_over_the_channels():
    left = np.concatenate([np.full(100, 0.5), np.full(100, -0.25)]).astype(np.float32)
    peaks = compute_peaks(np.stack([left, left]), columns=2)
    assert peaks.shape == (2, 3)
    np.testing.assert_allclose(peaks[0], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(peaks[1], [-0.25, -0.25, 0.25])
    loud = compute_peaks(np.array([3.0, -3.0]), columns=1)
    np.testing.assert_allclose(loud[0], [-1.0, 1.0, 1.0])
    assert not compute_peaks(np.zeros((2, 0)), columns=4).any()
    # a full-scale sine: peaks at +-1, RMS at 1/sqrt(2), so the envelope never reads as a solid bar
    sine = np.sin(np.linspace(0, 200 * np.pi, 48000)).astype(np.float32)
    envelope = compute_peaks(sine, columns=10)
    np.testing.assert_allclose(envelope[:, 2], 1 / np.sqrt(2), atol=0.01)
    assert (envelope[:, 1] > 0.99).all() and (envelope[:, 0] < -0.99).all()
    # opposite channels cancel in a mono mix; the envelope still shows them at full level
    wide = compute_peaks(np.stack([sine, -sine]), columns=10)
    np.testing.assert_allclose(wide[:, 2], 1 / np.sqrt(2), atol=0.01)


def test_peaks_reject_bad_shapes_and_column_counts():
    with pytest.raises(ValueError, match="shape"):
        compute_peaks(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="columns"):
        compute_peaks(np.zeros(10), columns=0)


# --------------------------------------------------------- request building
def test_generate_takes_host_metas_and_the_selection_length():
    host = HostValues(bpm=96.0, timesignature="3", keyscale="A minor", selection=(7.5, 22.5))
    request = build_request("generate", PromptValues(caption="dusty drums"), host)
    assert request.task_type == "text2music"
    assert (request.bpm, request.timesignature, request.keyscale) == (96, "3", "A minor")
    assert request.duration == 15.0
    assert request.seed is None
    explicit = build_request("generate", PromptValues(duration=30.0, seed=42), host)
    assert explicit.duration == 30.0 and explicit.item_seeds() == [42]


def test_lm_modes_free_clears_the_field_and_candidates_become_constraints():
    host = HostValues(bpm=120.0, keyscale="C major", timesignature="4")
    values = PromptValues(lm_modes={"bpm": "candidates", "keyscale": "free", "timesignature": "candidates"},
                          lm_candidates={"bpm": "118-124", "timesignature": "3, 4/4"})
    request = build_request("generate", values, host)
    assert request.bpm is None and request.keyscale == "" and request.timesignature == ""
    assert request.lm_constraints == {"bpm": [118, 124], "timesignature": ["3", "4"]}
    assert build_request("generate", PromptValues(), host).lm_constraints is None


def test_bad_candidates_name_the_field_and_the_problem():
    with pytest.raises(RequestError, match="keyscale: 'H minor'"):
        parse_candidates("keyscale", "A minor, H minor")
    with pytest.raises(RequestError, match="range"):
        parse_candidates("bpm", "fast")
    with pytest.raises(RequestError, match="low-high"):
        parse_candidates("duration", "90-60")
    with pytest.raises(RequestError, match="no candidates"):
        parse_candidates("language", "  ")
    assert parse_candidates("duration", "75") == [75.0, 75.0]


def test_source_tasks_need_a_source_and_repaint_needs_a_region(tmp_path):
    with pytest.raises(RequestError, match="src_audio"):
        build_request("cover", PromptValues(), HostValues())
    source = str(tmp_path / "mix.wav")
    with pytest.raises(RequestError, match="region"):
        build_request("repaint", PromptValues(src_audio=source), HostValues())
    repaint = build_request("repaint", PromptValues(src_audio=source), HostValues(selection=(4.0, 12.0)))
    assert (repaint.task_type, repaint.repainting_start, repaint.repainting_end) == ("repaint", 4.0, 12.0)
    from gui.request_builder import build_requests
    stems = build_requests("stems", PromptValues(src_audio=source, stems=("guitar", "bass")), HostValues())
    assert [(r.task_type, r.track_name) for r in stems] == [("extract", "guitar"), ("extract", "bass")]
    assert all(r.dit == "acestep-v15-base" for r in stems)  # only the base DiT can extract
    with pytest.raises(RequestError, match="at least one stem"):
        build_requests("stems", PromptValues(src_audio=source, stems=()), HostValues())
    extract = build_request("extract", PromptValues(src_audio=source, track_name="vocals"), HostValues())
    assert (extract.task_type, extract.track_name) == ("extract", "vocals")


def test_continue_outpaints_after_the_end_of_the_source(tmp_path):
    values = PromptValues(src_audio=str(tmp_path / "mix.wav"), duration=8.0)
    request = build_request("continue", values, HostValues(), source_duration_s=20.0)
    assert (request.task_type, request.repainting_start, request.repainting_end) == ("repaint", 20.0, 28.0)
    with pytest.raises(RequestError, match="length"):
        build_request("continue", values, HostValues())


def test_bridge_gets_only_the_metas_the_musician_overrode():
    from gui.request_builder import bridge_overrides
    host = HostValues(bpm=100.0, keyscale="A minor", timesignature="3", selection=(0.0, 8.0))
    following = {"tempo": True, "key": False, "meter": True}
    values = PromptValues(caption="x", lm_modes={"timesignature": "free"})
    fields = bridge_overrides("repaint", values, host, following)
    assert "bpm" not in fields and "duration" not in fields   # the bridge reads these from the host
    assert fields["keyscale"] == "A minor"                     # overridden by hand
    assert fields["timesignature"] == ""                       # the LM decides
    assert fields["caption"] == "x"
    assert bridge_overrides("generate", PromptValues(duration=12.0), host, following)["duration"] == 12.0
    stems = bridge_overrides("stems", PromptValues(stems=("drums", "piano")), host, following)
    assert stems["stems"] == ["drums", "piano"] and "track_name" not in stems


def test_bridge_overrides_leave_source_and_region_to_the_bridge():
    fields = prompt_fields("extract", PromptValues(caption="x", track_name="bass"), HostValues(bpm=100.0))
    assert fields["track_name"] == "bass" and fields["bpm"] == 100
    assert "src_audio" not in fields and "repainting_start" not in fields and "task_type" not in fields
    with pytest.raises(RequestError, match="action"):
        prompt_fields("explode", PromptValues(), HostValues())


# ------------------------------------------------------------------ models
def test_jobs_model_inserts_updates_and_reports_progress():
    qt_app()
    from gui.jobs_model import PROGRESS_ROLE, JobsModel
    model = JobsModel()
    model.update_job({"id": "abc123456789", "state": "queued", "request": {"task_type": "cover"},
                      "queue_position": 2})
    assert model.rowCount() == 1
    index = model.index(0, JobsModel.PROGRESS_COLUMN)
    assert model.data(index) == "waiting, #2" and model.data(index, PROGRESS_ROLE) == 0
    model.update_job({"id": "abc123456789", "state": "running",
                      "progress": {"stage": "diffusion", "step": 2, "total": 8}})
    assert model.rowCount() == 1
    assert model.data(index) == "diffusion 2/8" and model.data(index, PROGRESS_ROLE) == 25
    assert model.data(model.index(0, 1)) == "cover"
    model.update_job({"id": "abc123456789", "state": "failed", "error": "bad request: bpm: 500 is outside 30-300"})
    assert model.data(model.index(0, 4)) == "bad request: bpm: 500 is outside 30-300"
    model.update_job({"id": "other", "state": "done", "results": [{}, {}]})
    assert model.data(model.index(1, 4)) == "2 results"
    model.remove_finished()
    assert model.rowCount() == 0


def test_plain_error_keeps_the_last_line_of_a_traceback_and_explains_memory():
    from gui.jobs_model import plain_error
    assert plain_error("Traceback (most recent call last):\n  File x\nEngineError: DiT folder missing") \
        == "DiT folder missing"
    assert "shorter duration" in plain_error("CUDA out of memory. Tried to allocate 2 GiB")
    assert plain_error(None) == "failed (no reason given)"


def test_results_model_drags_file_urls_of_the_selected_variants(tmp_path):
    qt_app()
    from gui.results_model import ResultItem, ResultsModel, region_of
    model = ResultsModel()
    first = ResultItem("job1", 0, 7, str(tmp_path / "a.wav"), 4.0, 48000)
    second = ResultItem("job1", 1, 8, str(tmp_path / "b.wav"), 4.0, 48000)
    newer = ResultItem("job2", 0, 9, str(tmp_path / "c.wav"), 4.0, 48000)
    model.add(second)
    model.add(first)
    model.add(newer)
    assert [model.item(n) for n in range(3)] == [newer, first, second]  # newest job on top, variants in order
    mime = model.mimeData([model.index(1), model.index(2)])
    assert [url.toLocalFile() for url in mime.urls()] == [first.path, second.path]
    assert region_of({"task_type": "repaint", "repainting_start": 2.0, "repainting_end": -1}, 10.0) == (2.0, 10.0)
    # a negative start pads the source on the left: the region shifts by the padding (the engine's rule)
    assert region_of({"task_type": "repaint", "repainting_start": -3.0, "repainting_end": 4.0}, 10.0) == (0.0, 7.0)
    assert region_of({"task_type": "repaint", "repainting_start": 6.0, "repainting_end": 14.0}, 14.0) == (6.0, 14.0)
    assert region_of({"task_type": "text2music"}, 10.0) is None


def test_result_file_names_are_unique_per_variant_and_safe():
    from gui.main_window import result_file_name
    name = result_file_name("0123456789ab", 1, {"seed": 42, "format": "wav"},
                            {"task_type": "lego", "track_name": "guitar"})
    assert name == "01234567-lego-guitar-v2-42.wav"
    assert "/" not in result_file_name("j", 0, {"format": "../x"}, {"task_type": "../../etc"})


# -------------------------------------------------------------- host panel
def test_host_panel_follows_host_state_and_keeps_manual_overrides():
    qt_app()
    from bridge.host_state import HostState
    from gui.panels.host_panel import HostPanel
    state = HostState()
    panel = HostPanel()
    state.subscribe(lambda changed: panel.apply_snapshot(state.snapshot()))
    state.update("reaper", tempo=96.0, meter=(3, 4), key="a minor", region_s=(7.5, 22.5), region_qn=(12.0, 36.0))
    values = panel.values()
    assert (values.bpm, values.timesignature, values.keyscale) == (96.0, "3", "A minor")
    assert values.selection == (7.5, 22.5)
    assert panel.selection_label.text().startswith("5.1 – 13.1")

    panel.tempo.follow.setChecked(False)
    panel.tempo_spin.setValue(100.0)
    state.update("reaper", tempo=140.0, key="F# major")
    assert panel.values().bpm == 100.0          # overridden by hand
    assert panel.values().keyscale == "F# major"  # still following

    state.update("reaper", meter=(7, 8))
    assert panel.values().timesignature == ""  # the model has no 7/8: sent as unknown, and said so
    assert "7/8" in panel.host_meter_note.text()


def test_host_panel_shows_adapter_connections():
    qt_app()
    from gui.panels.host_panel import HostPanel
    panel = HostPanel()
    panel.set_adapters_status({"reaper": {"connected": True, "last_seen": 1.0},
                               "ableton": {"connected": False, "last_seen": None}})
    panel.set_engine_status(False, "refused")
    assert panel.adapter_connected("reaper")
    assert not panel.adapter_connected("ableton") and not panel.adapter_connected("engine")
    assert "refused" in panel._status_labels["engine"].toolTip()


def test_audition_is_disabled_with_a_hint_when_there_is_no_output_device():
    qt_app()
    from gui.audio import AudioPlayer
    from gui.panels.results_panel import ResultsPanel
    from gui.results_model import ResultsModel
    from gui.tasks import TaskRunner
    runner = TaskRunner()
    player = AudioPlayer(runner)
    player.devices, player.hint = [], "Audition is off: no audio output device was found."
    panel = ResultsPanel(ResultsModel(), player)
    assert not panel.play_button.isEnabled() and not panel.ab_button.isEnabled()
    assert "no audio output" in panel.hint.text() and not panel.hint.isHidden()
    errors = []
    player.error.connect(errors.append)
    player.play("/nonexistent.wav")
    assert errors == [player.hint]
    runner.close()


def test_settings_dialog_returns_the_edited_values():
    qt_app()
    from gui.settings_dialog import SettingsDialog
    dialog = SettingsDialog(Settings(), audio_devices=["Speakers", "Headphones"])
    dialog.engine_url.setText("http://studio:8765")
    dialog.engine_token.setText("tok")
    dialog.ports["reaper_listen_port"].setValue(9500)
    dialog.audio_device.setCurrentText("Headphones")
    dialog.host.setCurrentText("ableton")
    result = dialog.result_settings()
    assert (result.engine_url, result.engine_token, result.reaper_listen_port, result.audio_device, result.host) \
        == ("http://studio:8765", "tok", 9500, "Headphones", "ableton")
    dialog.audio_device.setCurrentText("system default")
    dialog.engine_url.setText("  ")
    result = dialog.result_settings()
    assert result.audio_device == "" and result.engine_url == Settings().engine_url


def test_recall_puts_a_variant_back_into_the_form_with_its_seed_locked():
    qt_app()
    from gui.panels.prompt_panel import PromptPanel
    panel = PromptPanel()
    panel.recall({"caption": "warm pads", "lyrics": "[Verse]\nla", "vocal_language": "de", "inference_steps": 12,
                  "shift": 2.5, "guidance_scale": 5.0, "repaint_mode": "aggressive", "track_name": "bass"},
                 seed=1234)
    values = panel.values()
    assert (values.caption, values.lyrics, values.vocal_language, values.inference_steps, values.shift) == \
        ("warm pads", "[Verse]\nla", "de", 12, 2.5)
    assert values.seed == 1234 and values.repaint_mode == "aggressive" and values.track_name == "bass"
    panel.seed_lock.setChecked(False)
    assert panel.values().seed is None


def test_structure_tags_go_on_their_own_line_and_replace_the_instrumental_placeholder():
    qt_app()
    from gui.panels.prompt_panel import PromptPanel
    panel = PromptPanel()
    panel.insert_tag("[Verse]")
    assert panel.lyrics.toPlainText() == "[Verse]\n"
    panel.lyrics.insertPlainText("words")
    panel.insert_tag("[Chorus]")
    assert panel.lyrics.toPlainText() == "[Verse]\nwords\n[Chorus]\n"


class _FakeSoundDevice:
    """Stands in for the sounddevice module (no PortAudio here): records play/stop calls."""

    def __init__(self):
        self.calls: list[tuple] = []

    def query_devices(self):
        return [{"name": "Mic", "max_output_channels": 0}, {"name": "Speakers", "max_output_channels": 2}]

    def play(self, data, rate, device=None):
        self.calls.append(("play", data.shape, rate, device))

    def stop(self):
        self.calls.append(("stop",))


def test_ab_audition_switches_variants_at_the_same_position(tmp_path, monkeypatch):
    qt_app()
    import soundfile as sf

    import gui.audio as audio
    from gui.panels.results_panel import ResultsPanel
    from gui.results_model import ResultItem, ResultsModel
    from gui.tasks import TaskRunner
    from tests.gui_helpers import wait_for
    fake = _FakeSoundDevice()
    monkeypatch.setattr(audio, "load_sounddevice", lambda: (fake, ""))
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.wav"
        sf.write(path, np.zeros((48000 * 4, 2), dtype=np.float32), 48000)
        paths.append(str(path))
    runner = TaskRunner()
    now = [100.0]
    player = audio.AudioPlayer(runner, clock=lambda: now[0])
    assert player.available and player.devices == ["Speakers"]
    model = ResultsModel()
    model.add(ResultItem("job", 1, 2, paths[1], 4.0, 48000))
    model.add(ResultItem("job", 0, 1, paths[0], 4.0, 48000))
    panel = ResultsPanel(model, player)
    assert panel.play_button.isEnabled()
    panel.device.setCurrentText("Speakers")

    panel.list.setCurrentIndex(model.index(0))
    panel.mark("A")
    panel.list.setCurrentIndex(model.index(1))
    panel.mark("B")
    panel.switch_ab()  # nothing playing: starts A from the top
    assert wait_for(lambda: player.current == ("job", 0), 5)
    assert fake.calls[-1] == ("play", (48000 * 4, 2), 48000, "Speakers")
    now[0] += 1.5  # A has played for 1.5 s
    panel.switch_ab()
    assert wait_for(lambda: player.current == ("job", 1), 5)
    assert fake.calls[-1][1][0] == 48000 * 4 - 48000 * 3 // 2  # B starts 1.5 s in
    panel.toggle_play()
    assert player.current is None
    assert wait_for(lambda: fake.calls[-1] == ("stop",), 5)
    runner.close()


def test_without_a_daw_the_defaults_are_shown_and_nothing_is_guessed():
    qt_app()
    from gui.panels.host_panel import UNKNOWN, HostPanel
    from gui.panels.prompt_panel import PromptPanel
    from gui.request_builder import DEFAULT_DURATION_S
    host, prompt = HostPanel(), PromptPanel()
    assert host.tempo_spin.text() == UNKNOWN and host.meter_combo.currentText() == UNKNOWN
    assert host.key_combo.currentText() == UNKNOWN
    assert f"{DEFAULT_DURATION_S:.0f} s" in prompt.duration.text()
    request = build_request("generate", prompt.values(), host.values())
    assert request.bpm is None and request.timesignature == "" and request.keyscale == ""
    assert request.duration == DEFAULT_DURATION_S  # shown in the form, not the engine's silent 120 s


def test_engine_errors_reach_the_musician_as_sentences():
    from engine.client import EngineHTTPError, EngineUnavailable
    from gui.tasks import describe_error
    refused = describe_error(EngineUnavailable("engine at http://127.0.0.1:8765 is not reachable "
                                               "(ConnectError: [Errno 111] Connection refused)"))
    assert "http://127.0.0.1:8765" in refused and "not answering" in refused
    assert "Errno" not in refused and "ConnectError" not in refused
    assert "token" in describe_error(EngineHTTPError(401, "missing or wrong token"))
    missing = describe_error(FileNotFoundError(2, "No such file or directory", "/x/take.wav"))
    assert missing == "/x/take.wav: No such file or directory"
    assert describe_error(RuntimeError("ValueError: [Errno 5] disk on fire\ntrace")) == "disk on fire"


def test_progress_stage_names_fit_the_bar():
    qt_app()
    from PyQt6.QtGui import QFontMetrics
    from PyQt6.QtWidgets import QApplication

    from gui.jobs_model import STAGE_WORDS, JobRow
    from gui.panels.jobs_panel import PROGRESS_MIN_WIDTH
    metrics = QFontMetrics(QApplication.font())
    for stage in STAGE_WORDS:
        row = JobRow(job_id="j", state="running", stage=stage, step=50, total=50)
        assert metrics.horizontalAdvance(row.progress_text()) < PROGRESS_MIN_WIDTH - 12, row.progress_text()


def test_reveal_without_a_file_manager_copies_the_path(tmp_path, monkeypatch):
    qt_app()
    from PyQt6.QtGui import QDesktopServices
    from PyQt6.QtWidgets import QApplication

    from gui.audio import AudioPlayer
    from gui.panels.results_panel import ResultsPanel
    from gui.results_model import ResultItem, ResultsModel
    from gui.tasks import TaskRunner
    runner = TaskRunner()
    model = ResultsModel()
    path = str(tmp_path / "take.wav")
    model.add(ResultItem(job_id="j", index=0, seed=1, path=path, duration=1.0, sample_rate=48000))
    panel = ResultsPanel(model, AudioPlayer(runner))
    messages = []
    panel.message.connect(messages.append)
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: False)
    panel.reveal_selected()
    assert QApplication.clipboard().text() == path
    assert messages and path in messages[-1] and "clipboard" in messages[-1]
    runner.close()


def test_window_icons_are_standard_icons_not_symbol_characters():
    qt_app()
    from PyQt6.QtWidgets import QAbstractButton

    from gui.panels.prompt_panel import PromptPanel
    panel = PromptPanel()
    for button in panel.findChildren(QAbstractButton) + panel.tasks_box.findChildren(QAbstractButton) + \
            panel.params_box.findChildren(QAbstractButton):
        assert all(ord(ch) < 0x2190 for ch in button.text()), button.text()  # no arrows, dice or emoji
    dice = panel.params_box.findChild(QAbstractButton, "new_seed")
    assert dice is not None and not dice.icon().isNull()


def test_waveform_row_draws_region_edges_and_the_playhead():
    qt_app()
    from PyQt6.QtCore import QRect
    from PyQt6.QtGui import QColor, QImage, QPainter
    from PyQt6.QtWidgets import QStyleOptionViewItem

    from gui.results_model import ResultItem, ResultsModel
    from gui.waveform import WaveformDelegate
    model = ResultsModel()
    model.add(ResultItem(job_id="j", index=0, seed=1, path="/x.wav", duration=10.0, sample_rate=48000,
                         peaks=np.zeros((100, 3), np.float32), region=(2.0, 5.0)))
    position = [7.5]
    delegate = WaveformDelegate(position=lambda: position[0])
    delegate.playing = ("j", 0)
    image = QImage(400, WaveformDelegate.ROW_HEIGHT, QImage.Format.Format_RGB32)
    image.fill(QColor("black"))
    option = QStyleOptionViewItem()
    option.rect = QRect(0, 0, 400, WaveformDelegate.ROW_HEIGHT)
    painter = QPainter(image)
    delegate.paint(painter, option, model.index(0))
    painter.end()
    left, width = 3 + 6, 400 - 6 - 12  # the row's inset and the waveform's margins
    y = WaveformDelegate.ROW_HEIGHT - 12

    def colour_at(seconds: float) -> QColor:
        return image.pixelColor(int(left + width * seconds / 10.0), y)

    assert colour_at(7.5).lightness() > 200  # the playhead
    region, outside = colour_at(3.5), colour_at(9.0)
    assert region.red() > outside.red() + 20  # the region is shaded orange
    assert colour_at(2.0).red() > 150  # its edges are drawn
