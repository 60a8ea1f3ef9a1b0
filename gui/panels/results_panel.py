"""Results panel: a waveform per variant, audition with A/B, recall, drag into the DAW, insert, reveal."""

from __future__ import annotations

import os

from PyQt6.QtCore import QTimer, QUrl, pyqtSignal
from PyQt6.QtGui import QDesktopServices
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QVBoxLayout,
)

from gui.audio import AudioPlayer
from gui.results_model import ResultItem, ResultsModel
from gui.theme import icon
from gui.waveform import WaveformDelegate


def _button(text: str, icon_name: str | None = None, tip: str = "") -> QPushButton:
    button = QPushButton(text)
    if icon_name:
        button.setIcon(icon(icon_name))
    if tip:
        button.setToolTip(tip)
    return button


class ResultsPanel(QGroupBox):
    recall_requested = pyqtSignal(object)   # ResultItem
    insert_requested = pyqtSignal(object)   # ResultItem
    device_changed = pyqtSignal(str)
    message = pyqtSignal(str)               # a sentence for the status bar

    def __init__(self, model: ResultsModel, player: AudioPlayer, parent=None):
        super().__init__("Results", parent)
        self.model = model
        self.player = player
        self.list = QListView()
        self.list.setModel(model)
        self.delegate = WaveformDelegate(self.list, position=player.position_s)
        self.list.setItemDelegate(self.delegate)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setDragEnabled(True)
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.list.setSpacing(1)
        self.list.setToolTip("Drag a variant onto a DAW track to place it there. Double-click to play.")
        self.list.doubleClicked.connect(lambda *_: self.play_selected())
        self.empty_hint = QLabel("Rendered variants appear here: drag one onto a DAW track, or audition "
                                 "and compare them with A/B.")
        self.empty_hint.setObjectName("hint")
        self.empty_hint.setWordWrap(True)

        self.play_button = _button("Play", "play", "Play the selected variant (Ctrl+P, double-click)")
        self.stop_button = _button("Stop", "stop", "Stop playback (Esc)")
        self.mark_a = _button("A", tip="Mark the selected variant as A")
        self.mark_b = _button("B", tip="Mark the selected variant as B")
        self.ab_button = _button("A/B", tip="Switch between A and B at the same position (Ctrl+B)")
        self.recall_button = _button("Recall", "recall", "Put this variant's prompt, parameters and seed back "
                                                         "into the form")
        self.insert_button = _button("Insert", "insert", "Place the selected variant in the DAW through the bridge")
        self.reveal_button = _button("Reveal", "reveal", "Show the file in the file manager (or copy its path)")
        self.device = QComboBox()
        self.device.addItem("system default")
        self.device.addItems(player.devices)
        self.device.setToolTip("Audio output for audition")
        self.device.setMinimumWidth(120)
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
        model.rowsInserted.connect(self._show_empty_hint)
        model.modelReset.connect(self._show_empty_hint)
        # the playhead moves while something plays
        self._playhead_timer = QTimer(self)
        self._playhead_timer.setInterval(40)
        self._playhead_timer.timeout.connect(self._tick)

        row1 = QHBoxLayout()
        for widget in (self.play_button, self.stop_button, self.mark_a, self.mark_b, self.ab_button):
            row1.addWidget(widget)
        row1.addWidget(self.device, 1)
        row2 = QHBoxLayout()
        for widget in (self.recall_button, self.insert_button, self.reveal_button):
            row2.addWidget(widget)
        row2.addStretch(1)
        for button in (self.mark_a, self.mark_b, self.ab_button):
            button.setMinimumWidth(34)
            button.setMaximumWidth(48)
        layout = QVBoxLayout(self)
        layout.addWidget(self.empty_hint)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.hint)
        layout.addLayout(row1)
        layout.addLayout(row2)
        self._show_empty_hint()

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
        """Open the file's folder; without a file manager, copy the path and say where the file is."""
        item = self.selected_item()
        if item is None:
            return
        folder = os.path.dirname(item.path)
        if QDesktopServices.openUrl(QUrl.fromLocalFile(folder)):
            self.message.emit(f"Opened {folder}")
            return
        QApplication.clipboard().setText(item.path)
        self.message.emit(f"No file manager answered; the path is copied to the clipboard: {item.path}")

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
        if key is None:
            self._playhead_timer.stop()
        else:
            self._playhead_timer.start()
        self.list.viewport().update()

    def _tick(self) -> None:
        item = self._item_for(self.delegate.playing) if self.delegate.playing else None
        if item is not None and self.player.position_s() > item.duration:
            self.player.stop()  # played to the end
        self.list.viewport().update()

    def _show_empty_hint(self, *_) -> None:
        self.empty_hint.setVisible(self.model.rowCount() == 0)
