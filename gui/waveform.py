"""Waveform peaks (pure numpy) and the delegate that draws one variant per row."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from PyQt6.QtCore import QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QPainter, QPen
from PyQt6.QtWidgets import QStyle, QStyledItemDelegate

from gui.results_model import RESULT_ROLE

PEAK_COLUMNS = 600


def compute_peaks(audio: np.ndarray, columns: int = PEAK_COLUMNS) -> np.ndarray:
    """Min/max per column of the channel mix: shape [columns, 2], values clipped to -1..1.

    `audio` is [channels, samples] (the engine's layout) or [samples]. Empty audio gives zeros.
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=0)
    elif data.ndim != 1:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {data.shape}")
    if data.size == 0:
        return np.zeros((columns, 2), dtype=np.float32)
    edges = np.linspace(0, data.size, columns + 1).astype(np.int64)
    peaks = np.zeros((columns, 2), dtype=np.float32)
    for column in range(columns):
        start, end = edges[column], max(edges[column + 1], edges[column] + 1)
        chunk = data[start:min(end, data.size)]
        if chunk.size:
            peaks[column] = (chunk.min(), chunk.max())
    return np.clip(peaks, -1.0, 1.0)


def read_peaks(path: str, columns: int = PEAK_COLUMNS) -> tuple[np.ndarray, float, int]:
    """Peaks, duration (s) and sample rate of an audio file (runs on a worker thread)."""
    audio, sample_rate = sf.read(path, dtype="float32", always_2d=True)  # [samples, channels]
    return compute_peaks(audio.T, columns), audio.shape[0] / float(sample_rate), int(sample_rate)


class WaveformDelegate(QStyledItemDelegate):
    """Paints a result row: its waveform, the generated region shaded, A/B marks and a label."""

    ROW_HEIGHT = 72

    def __init__(self, parent=None):
        super().__init__(parent)
        self.marks: dict[str, tuple[str, int]] = {}  # "A"/"B" -> (job_id, index)
        self.playing: tuple[str, int] | None = None

    def sizeHint(self, option, index) -> QSize:
        return QSize(320, self.ROW_HEIGHT)

    def paint(self, painter: QPainter, option, index) -> None:
        item = index.data(RESULT_ROLE)
        painter.save()
        rect = option.rect.adjusted(2, 2, -2, -2)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.fillRect(rect, QColor("#1f2a37" if selected else "#161b22"))
        if item is not None:
            wave = QRectF(rect.adjusted(4, 18, -4, -4))
            if item.region and item.duration > 0:
                x0 = wave.left() + wave.width() * item.region[0] / item.duration
                x1 = wave.left() + wave.width() * item.region[1] / item.duration
                painter.fillRect(QRectF(x0, wave.top(), max(1.0, x1 - x0), wave.height()), QColor(255, 166, 87, 60))
            if item.peaks is not None and len(item.peaks):
                self._draw_peaks(painter, wave, item.peaks, selected)
            painter.setPen(QColor("#e6edf3"))
            key = (item.job_id, item.index)
            tags = [name for name, mark in sorted(self.marks.items()) if mark == key]
            prefix = ("▶ " if self.playing == key else "") + ("".join(f"[{t}] " for t in tags))
            painter.drawText(QRectF(rect.adjusted(6, 1, -6, 0)).adjusted(0, 0, 0, -(rect.height() - 17)),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, prefix + item.label())
        painter.restore()

    @staticmethod
    def _draw_peaks(painter: QPainter, wave: QRectF, peaks: np.ndarray, selected: bool) -> None:
        painter.setPen(QPen(QColor("#58a6ff" if selected else "#3fb950"), 1))
        middle = wave.center().y()
        half = wave.height() / 2
        columns = len(peaks)
        width = int(wave.width())
        for x in range(max(1, width)):
            low, high = peaks[min(columns - 1, x * columns // max(1, width))]
            px = wave.left() + x
            painter.drawLine(int(px), int(middle - high * half), int(px), int(middle - low * half))
