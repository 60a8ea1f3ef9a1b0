"""`SketchPanel`: "Sketch → part" — the selected MIDI clip (or a dropped .mid file) becomes a produced part.

The button asks the bridge to read the DAW's selected MIDI clip; dropping a .mid file anywhere on
the window runs the same action on that file. "Follow the sketch" is the cover strength: high
keeps the notes, low keeps only the form. The caption box steers the style as for other tasks.
"""

from __future__ import annotations

import os
from typing import Any

from PyQt6.QtCore import QEvent, QObject, Qt, pyqtSignal
from PyQt6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSlider, QVBoxLayout, QWidget

MIDI_SUFFIXES = (".mid", ".midi", ".smf")


def midi_paths(mime: Any) -> list[str]:
    """Local .mid files in a drag's mime data."""
    if mime is None or not mime.hasUrls():
        return []
    paths = [url.toLocalFile() for url in mime.urls() if url.isLocalFile()]
    return [p for p in paths if p.lower().endswith(MIDI_SUFFIXES)]


class SketchPanel(QGroupBox):
    sketch_requested = pyqtSignal(dict)  # bridge settings: follow, and midi_path for a dropped file

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Sketch → part", parent)
        self.setObjectName("sketchPanel")
        self.setAcceptDrops(True)
        self.button = QPushButton("Sketch → part")
        self.button.setToolTip("Turn the selected MIDI clip into a produced part on a new track "
                               "(or drop a .mid file on the window)")
        self.button.clicked.connect(lambda: self.sketch_requested.emit(self.settings()))
        self.follow = QSlider(Qt.Orientation.Horizontal)
        self.follow.setRange(0, 100)
        self.follow.setValue(70)
        self.follow.setToolTip("Follow the sketch: high keeps your notes, low keeps only the form")
        self.follow_label = QLabel()
        self.follow.valueChanged.connect(self._show_follow)
        self._show_follow(self.follow.value())
        # What happened last, on one line (the whole text is the tooltip); the hint until then.
        self.status = QLabel()
        self.status.setMinimumWidth(0)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.show_message("Select a MIDI clip in the DAW, or drop a .mid file on the window")
        top = QHBoxLayout()
        top.addWidget(self.button)
        top.addWidget(self.status, 1)
        row = QHBoxLayout()
        row.addWidget(QLabel("Follow the sketch"))
        row.addWidget(self.follow, 1)
        row.addWidget(self.follow_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addLayout(top)
        layout.addLayout(row)
        self.setMaximumHeight(self.sizeHint().height())
        self._watched: list[QObject] = []

    def _show_follow(self, value: int) -> None:
        self.follow_label.setText(f"{value}%")

    def settings(self, midi_path: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"follow": round(self.follow.value() / 100.0, 2)}
        if midi_path:
            out["midi_path"] = midi_path
        return out

    def drop_file(self, path: str) -> None:
        """Run the sketch on a .mid file (what a drop does)."""
        self.show_message(f"Sketch: {os.path.basename(path)}")
        self.sketch_requested.emit(self.settings(path))

    def show_message(self, text: str) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)

    # ---------------------------------------------------------------- drops on the whole window
    def watch_drops(self, widget: QWidget) -> None:
        """Accept .mid drops anywhere on `widget` (the main window)."""
        widget.setAcceptDrops(True)
        widget.installEventFilter(self)
        self._watched.append(widget)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt)
        # Qt may still call this while the interpreter tears the panel down: then do nothing.
        watched = getattr(self, "_watched", None)
        if not watched or obj not in watched:
            return False
        kind = event.type()
        if kind in (QEvent.Type.DragEnter, QEvent.Type.DragMove) and midi_paths(event.mimeData()):
            event.acceptProposedAction()
            return True
        if kind == QEvent.Type.Drop:
            paths = midi_paths(event.mimeData())
            if paths:
                event.acceptProposedAction()
                self.drop_file(paths[0])
                return True
        return False

    def dragEnterEvent(self, event) -> None:
        if midi_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = midi_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.drop_file(paths[0])
