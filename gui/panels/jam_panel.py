"""`JamPanel`: the Jam toggle (bars, lookahead) and a strip of the chunks around the playhead.

The strip shows each chunk the bridge reports (`jam_chunk_state` / `jam_chunk` events) as a block
on a time line that scrolls with the playhead: grey while queued, amber while generating, green
once placed, red when it came too late and was left out. The caption box of the prompt panel
steers the next chunk (the window sends `/acecomp/jam/prompt` when it changes).
"""

from __future__ import annotations

from typing import Any

from PyQt6.QtCore import QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QPainter, QPen
from PyQt6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSpinBox, QVBoxLayout, QWidget

STATE_COLOURS = {"queued": "#6b7280", "generating": "#d97706", "placed": "#16a34a", "late": "#dc2626",
                 "cancelled": "#374151", "failed": "#7f1d1d"}


class JamStrip(QWidget):
    """Chunks relative to the playhead: `behind_s` seconds of the past on the left, `ahead_s` to come."""

    def __init__(self, parent: QWidget | None = None, behind_s: float = 4.0, ahead_s: float = 28.0):
        super().__init__(parent)
        self.behind_s, self.ahead_s = behind_s, ahead_s
        self.chunks: dict[int, dict[str, Any]] = {}
        self.playhead_s = 0.0
        self.setMinimumHeight(26)
        self.setToolTip("Jam chunks: grey queued, amber generating, green placed, red too late")

    def clear(self) -> None:
        self.chunks.clear()
        self.update()

    def set_chunk(self, chunk: dict[str, Any]) -> None:
        self.chunks[int(chunk["index"])] = dict(chunk)
        self.update()

    def set_playhead(self, position_s: float) -> None:
        self.playhead_s = float(position_s)
        self.update()

    def x_of(self, time_s: float) -> float:
        span = self.behind_s + self.ahead_s
        return (time_s - self.playhead_s + self.behind_s) / span * max(1, self.width())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in self.chunks.values():
            out[chunk["state"]] = out.get(chunk["state"], 0) + 1
        return out

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#111827"))
        height = self.height()
        for chunk in self.chunks.values():
            left, right = self.x_of(chunk["start_s"]), self.x_of(chunk["end_s"])
            if right < 0 or left > self.width():
                continue
            painter.fillRect(QRectF(left + 1, 4, max(2.0, right - left - 2), height - 8),
                             QColor(STATE_COLOURS.get(chunk["state"], "#6b7280")))
            painter.setPen(QColor("#f9fafb"))
            painter.drawText(QRectF(left + 4, 4, max(2.0, right - left - 6), height - 8),
                             Qt.AlignmentFlag.AlignVCenter, f"{chunk['index'] + 1}")
        painter.setPen(QPen(QColor("#f9fafb"), 2))
        x = self.x_of(self.playhead_s)
        painter.drawLine(int(x), 0, int(x), height)
        painter.end()


class JamPanel(QGroupBox):
    start_requested = pyqtSignal(dict)  # bars, lookahead
    stop_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Jam", parent)
        self.setObjectName("jamPanel")
        self.toggle = QPushButton("Jam")
        self.toggle.setCheckable(True)
        self.toggle.setToolTip("Keep the next bars generated ahead of the playhead, on the track 'ACE Jam'")
        self.toggle.clicked.connect(self._on_toggle)
        self.bars = QSpinBox()
        self.bars.setRange(1, 16)
        self.bars.setValue(4)
        self.bars.setSuffix(" bars")
        self.lookahead = QSpinBox()
        self.lookahead.setRange(1, 8)
        self.lookahead.setValue(2)
        self.lookahead.setPrefix("ahead ")
        self.strip = JamStrip()
        # One line beside the controls; the whole text is also the tooltip when it does not fit.
        self.status = QLabel()
        self.status.setMinimumWidth(0)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._set_status("Press play in the DAW, then Jam; the caption steers the next chunk")
        row = QHBoxLayout()
        row.addWidget(self.toggle)
        row.addWidget(self.bars)
        row.addWidget(self.lookahead)
        row.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addLayout(row)
        layout.addWidget(self.strip)
        self.setMaximumHeight(self.sizeHint().height())

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)

    @property
    def running(self) -> bool:
        return self.toggle.isChecked()

    def settings(self) -> dict[str, Any]:
        return {"bars": self.bars.value(), "lookahead": self.lookahead.value()}

    def _on_toggle(self, checked: bool) -> None:
        if checked:
            self.strip.clear()
            self._set_status("Jam: starting…")
            self.start_requested.emit(self.settings())
        else:
            self.stop_requested.emit()

    def set_running(self, running: bool, message: str = "") -> None:
        self.toggle.setChecked(running)
        self.bars.setEnabled(not running)
        self.lookahead.setEnabled(not running)
        if message:
            self._set_status(f"Jam: {message}")

    def apply_event(self, event: dict[str, Any]) -> None:
        """A bridge `jam_*` event."""
        kind = event.get("type")
        if kind in ("jam_chunk", "jam_chunk_state"):
            self.strip.set_chunk(event)
            counts = self.strip.counts()
            self._set_status("Jam: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        elif kind == "jam_skip":
            self._set_status(f"Jam: {event.get('message') or 'fell behind, skipped ahead'}")
        elif kind == "jam_state":
            running = event.get("state") == "running"
            if not running:  # a chunk still queued will not come
                for index in [i for i, c in self.strip.chunks.items() if c["state"] == "queued"]:
                    del self.strip.chunks[index]
                self.strip.update()
            self.set_running(running, str(event.get("message") or ""))

    def apply_snapshot(self, snapshot: dict[str, dict[str, Any]]) -> None:
        """Host state from the bridge: follows the playhead."""
        position = (snapshot.get("position_s") or {}).get("value")
        if isinstance(position, (int, float)):
            self.strip.set_playhead(position)
