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
