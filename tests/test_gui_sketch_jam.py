"""The "Sketch -> part" panel: the button and a .mid dropped anywhere on the window ask the bridge."""

from PyQt6.QtCore import QMimeData, QPointF, Qt, QUrl
from PyQt6.QtGui import QDropEvent
from PyQt6.QtWidgets import QWidget

from gui.panels.sketch_panel import SketchPanel, midi_paths
from tests.gui_helpers import qt_app


def _drop(panel, widget, paths):
    """What Qt hands the window's event filter when a file is dropped (a real drag needs a display)."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(p) for p in paths])
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    taken = panel.eventFilter(widget, event)
    return taken, mime


def test_button_and_window_drop_request_a_sketch(tmp_path):
    qt_app()
    window = QWidget()
    panel = SketchPanel(window)
    panel.watch_drops(window)
    asked = []
    panel.sketch_requested.connect(asked.append)
    panel.follow.setValue(35)
    panel.button.click()
    assert asked == [{"follow": 0.35}]
    song = str(tmp_path / "idea.mid")
    taken, _ = _drop(panel, window, [str(tmp_path / "notes.txt")])  # not MIDI: left to the window
    assert not taken and len(asked) == 1
    taken, mime = _drop(panel, window, [song])
    assert taken and window.acceptDrops()
    assert asked[-1] == {"follow": 0.35, "midi_path": song}
    assert "idea.mid" in panel.status.text()
    assert midi_paths(mime) == [song]
    window.deleteLater()


def test_jam_panel_toggle_events_and_strip():
    from gui.panels.jam_panel import JamPanel
    qt_app()
    panel = JamPanel()
    started, stopped = [], []
    panel.start_requested.connect(started.append)
    panel.stop_requested.connect(lambda: stopped.append(True))
    panel.bars.setValue(2)
    panel.toggle.click()
    assert started == [{"bars": 2, "lookahead": 2}] and panel.running
    panel.apply_event({"type": "jam_state", "state": "running", "message": "jam from bar 3"})
    assert not panel.bars.isEnabled()
    panel.apply_event({"type": "jam_chunk_state", "index": 0, "start_s": 3.75, "end_s": 7.5, "state": "generating"})
    panel.apply_event({"type": "jam_chunk", "index": 0, "start_s": 3.75, "end_s": 7.5, "state": "placed"})
    panel.apply_event({"type": "jam_chunk_state", "index": 1, "start_s": 7.5, "end_s": 11.25, "state": "generating"})
    assert panel.strip.counts() == {"placed": 1, "generating": 1}
    panel.apply_snapshot({"position_s": {"value": 5.0, "source": "reaper", "updated_at": 0}})
    assert panel.strip.playhead_s == 5.0 and panel.strip.x_of(5.0) < panel.strip.x_of(7.5)
    panel.strip.repaint()
    panel.toggle.click()
    assert stopped == [True]
    panel.apply_event({"type": "jam_chunk_state", "index": 2, "start_s": 11.25, "end_s": 15.0, "state": "queued"})
    assert panel.strip.counts()["queued"] == 1
    panel.apply_event({"type": "jam_state", "state": "stopped", "message": "stopped"})
    assert "queued" not in panel.strip.counts()
    assert not panel.running and panel.bars.isEnabled() and "stopped" in panel.status.text()


def test_window_jam_and_sketch_through_the_embedded_bridge(tmp_path):
    """The window's Jam toggle and a dropped .mid run through a real BridgeApp and engine API (echo)."""
    import mido

    from bridge.app import BridgeApp
    from bridge.config import BridgeConfig
    from engine.client import EngineClient
    from engine.process import free_port
    from gui.main_window import MainWindow
    from gui.settings import Settings
    from simulators.pipelines import echo_engine
    from tests.gui_helpers import make_fake_daw, wait_for
    qt_app()
    daw = make_fake_daw()
    output = tmp_path / "clips"
    with echo_engine(tmp_path) as engine:
        config = BridgeConfig(engine_url=engine.url, host="none", osc_port=free_port(), output_dir=str(output))
        bridge = BridgeApp(config, EngineClient(engine.url), adapters={"reaper": daw})
        bridge.start()
        win = MainWindow(Settings(engine_url=engine.url, output_dir=str(output)), EngineClient(engine.url),
                         bridge=bridge, settings_path=tmp_path / "gui.json", poll_ms=300)
        try:
            win.show()
            bridge.host_state.update("reaper", tempo=120.0, meter=(4, 4), region_s=(4.0, 8.0), sample_rate=44100,
                                     playing=True, position_s=1.0, project_name="song")
            assert wait_for(lambda: win.host_panel.adapter_connected("reaper") and win.link.connected, 20)
            win.prompt_panel.caption.setPlainText("jam caption")
            win.jam_panel.bars.setValue(2)
            win.jam_panel.toggle.click()
            assert wait_for(lambda: win.jam_panel.strip.counts().get("placed", 0) >= 2, 30), win.jam_panel.status.text()
            placed = sorted(c["start_s"] for c in win.jam_panel.strip.chunks.values() if c["state"] == "placed")
            assert placed[:2] == [2.0, 6.0]  # the next bar after the playhead, then 2 bars (4 s) later
            assert daw.inserts[0]["track_name"] == "ACE Jam" and daw.inserts[0]["new_track"]
            win.jam_panel.toggle.click()
            assert wait_for(lambda: not bridge.jam.running and not win.jam_panel.running, 20)

            mid = mido.MidiFile()
            track = mido.MidiTrack()
            track += [mido.Message("note_on", note=60, velocity=90, time=0),
                      mido.Message("note_off", note=60, velocity=0, time=480 * 7)]  # 7 beats: 2 bars of 4/4
            mid.tracks.append(track)
            mid.save(tmp_path / "idea.mid")
            count = len(daw.inserts)
            win.sketch_panel.drop_file(str(tmp_path / "idea.mid"))
            assert wait_for(lambda: len(daw.inserts) > count, 30), win.statusBar().currentMessage()
            sketch_insert = daw.inserts[-1]
            assert sketch_insert["track_name"] == "idea (ACE)" and sketch_insert["position_s"] == 4.0
            assert "built-in synth" in win.sketch_panel.status.text() or "rendered with" in \
                win.sketch_panel.status.text()
        finally:
            win.close()
            bridge.stop()
