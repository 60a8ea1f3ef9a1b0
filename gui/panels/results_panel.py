"""Results panel: a waveform per variant, audition with A/B, recall, drag into the DAW, insert, reveal."""

from __future__ import annotations

import os

from PyQt6.QtCore import QUrl, pyqtSignal
from PyQt6.QtGui import QDesktopServices
from PyQt6.QtWidgets import (QAbstractItemView, QComboBox, QGroupBox, QHBoxLayout, QLabel, QListView,
                             QPushButton, QVBoxLayout)

from gui.audio import AudioPlayer
from gui.results_model import ResultItem, ResultsModel
from gui.waveform import WaveformDelegate


class ResultsPanel(QGroupBox):
    recall_requested = pyqtSignal(object)   # ResultItem
    insert_requested = pyqtSignal(object)   # ResultItem
    device_changed = pyqtSignal(str)

    def __init__(self, model: ResultsModel, player: AudioPlayer, parent=None):
        super().__init__("Results", parent)
        self.model = model
        self.player = player
        self.list = QListView()
        self.list.setModel(model)
        self.delegate = WaveformDelegate(self.list)
        self.list.setItemDelegate(self.delegate)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setDragEnabled(True)
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.list.setToolTip("Drag a variant onto a DAW track to place it there")
        self.list.doubleClicked.connect(lambda *_: self.play_selected())

        self.play_button = QPushButton("▶ Play")
        self.stop_button = QPushButton("■ Stop")
        self.mark_a = QPushButton("Set A")
        self.mark_b = QPushButton("Set B")
        self.ab_button = QPushButton("A/B")
        self.ab_button.setToolTip("Switch between A and B at the same position (Ctrl+B)")
        self.recall_button = QPushButton("Recall")
        self.recall_button.setToolTip("Put this variant's prompt, parameters and seed back into the form")
        self.insert_button = QPushButton("Insert into DAW")
        self.reveal_button = QPushButton("Reveal")
        self.reveal_button.setToolTip("Open the folder that holds the file")
        self.device = QComboBox()
        self.device.addItem("system default")
        self.device.addItems(player.devices)
        self.hint = QLabel(player.hint)
        self.hint.setObjectName("hint")
        self.hint.setWordWrap(True)
        self.hint.setVisible(bool(player.hint))

        audition = (self.play_button, self.stop_button, self.mark_a, self.mark_b, self.ab_button, self.device)
        for widget in audition:
            widget.setEnabled(player.available)
            if not player.available:
                widget.setToolTip(player.hint)

        self.play_button.clicked.connect(self.play_selected)
        self.stop_button.clicked.connect(player.stop)
        self.mark_a.clicked.connect(lambda: self.mark("A"))
        self.mark_b.clicked.connect(lambda: self.mark("B"))
        self.ab_button.clicked.connect(self.switch_ab)
        self.recall_button.clicked.connect(lambda: self._emit_for_selected(self.recall_requested))
        self.insert_button.clicked.connect(lambda: self._emit_for_selected(self.insert_requested))
        self.reveal_button.clicked.connect(self.reveal_selected)
        self.device.currentTextChanged.connect(self._on_device)
        player.started.connect(self._on_playing)
        player.stopped.connect(lambda: self._on_playing(None))

        row1 = QHBoxLayout()
        for widget in (self.play_button, self.stop_button, self.mark_a, self.mark_b, self.ab_button):
            row1.addWidget(widget)
        row1.addWidget(QLabel("Output"))
        row1.addWidget(self.device, 1)
        row2 = QHBoxLayout()
        for widget in (self.recall_button, self.insert_button, self.reveal_button):
            row2.addWidget(widget)
        row2.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.hint)
        layout.addLayout(row1)
        layout.addLayout(row2)

    # -------------------------------------------------------------- actions
    def selected_items(self) -> list[ResultItem]:
        rows = sorted(index.row() for index in self.list.selectionModel().selectedIndexes())
        return [item for item in (self.model.item(r) for r in rows) if item is not None]

    def selected_item(self) -> ResultItem | None:
        """The variant under the cursor, else the first selected one, else the newest."""
        current = self.list.currentIndex()
        if current.isValid() and self.model.item(current.row()) is not None:
            return self.model.item(current.row())
        items = self.selected_items()
        return items[0] if items else self.model.item(0)

    def set_insert_available(self, available: bool, hint: str = "") -> None:
        self.insert_button.setEnabled(available)
        self.insert_button.setToolTip(hint or "Place the selected variant in the DAW through the bridge")

    def play_selected(self) -> None:
        item = self.selected_item()
        if item is not None:
            self.player.play(item.path, (item.job_id, item.index))

    def toggle_play(self) -> None:
        if self.player.current is not None:
            self.player.stop()
        else:
            self.play_selected()

    def mark(self, name: str) -> None:
        item = self.selected_item()
        if item is not None:
            self.delegate.marks[name] = (item.job_id, item.index)
            self.list.viewport().update()

    def switch_ab(self) -> None:
        """Play B if A is playing (from the same position), else A."""
        if "A" not in self.delegate.marks or "B" not in self.delegate.marks:
            return
        target = "B" if self.player.current == self.delegate.marks["A"] else "A"
        item = self._item_for(self.delegate.marks[target])
        if item is not None:
            self.player.switch_to(item.path, (item.job_id, item.index))

    def reveal_selected(self) -> None:
        item = self.selected_item()
        if item is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(os.path.dirname(item.path)))

    def _item_for(self, key) -> ResultItem | None:
        for item in self.model.items():
            if (item.job_id, item.index) == key:
                return item
        return None

    def _emit_for_selected(self, signal) -> None:
        item = self.selected_item()
        if item is not None:
            signal.emit(item)

    def _on_device(self, name: str) -> None:
        self.player.set_device(None if name == "system default" else name)
        self.device_changed.emit("" if name == "system default" else name)

    def _on_playing(self, key) -> None:
        self.delegate.playing = key
        self.list.viewport().update()
