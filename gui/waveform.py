"""Waveform envelopes (pure numpy) and the delegate that draws one variant per row.

A row shows the peak envelope (min/max per column) with the RMS envelope inside it, as
audio editors do: loud material stays readable instead of becoming a solid bar. The
generated region is shaded with its edges marked, and the playhead moves during audition.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import soundfile as sf
from PyQt6.QtCore import QPointF, QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QPainter, QPainterPath, QPen, QPolygonF
from PyQt6.QtWidgets import QStyle, QStyledItemDelegate

from gui.results_model import RESULT_ROLE
from gui.theme import COLOURS

PEAK_COLUMNS = 800


def compute_peaks(audio: np.ndarray, columns: int = PEAK_COLUMNS) -> np.ndarray:
    """Per column over all channels: min, max and RMS; shape [columns, 3], clipped to -1..1.

    `audio` is [channels, samples] (the engine's layout) or [samples]. The channels are not
    summed: a wide stereo signal would cancel in a mono mix and look quieter than it sounds.
    Empty audio gives zeros.
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    elif data.ndim != 2:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {data.shape}")
    envelope = np.zeros((columns, 3), dtype=np.float32)
    length = data.shape[1]
    if length == 0:
        return envelope
    edges = np.linspace(0, length, columns + 1).astype(np.int64)
    for column in range(columns):
        start, end = edges[column], max(edges[column + 1], edges[column] + 1)
        chunk = data[:, start:min(end, length)]
        if chunk.size:
            envelope[column] = (chunk.min(), chunk.max(), np.sqrt(np.mean(np.square(chunk, dtype=np.float64))))
    return np.clip(envelope, -1.0, 1.0)


def read_peaks(path: str, columns: int = PEAK_COLUMNS) -> tuple[np.ndarray, float, int]:
    """Envelope, duration (s) and sample rate of an audio file (runs on a worker thread)."""
    audio, sample_rate = sf.read(path, dtype="float32", always_2d=True)  # [samples, channels]
    return compute_peaks(audio.T, columns), audio.shape[0] / float(sample_rate), int(sample_rate)


class WaveformDelegate(QStyledItemDelegate):
    """Paints a result row: a caption line, then the waveform with region, A/B marks and playhead."""

    ROW_HEIGHT = 96
    CAPTION_HEIGHT = 18

    def __init__(self, parent=None, position: Callable[[], float] | None = None):
        super().__init__(parent)
        self.marks: dict[str, tuple[str, int]] = {}  # "A"/"B" -> (job_id, index)
        self.playing: tuple[str, int] | None = None
        self.position = position or (lambda: 0.0)  # seconds into the playing variant

    def sizeHint(self, option, index) -> QSize:
        return QSize(320, self.ROW_HEIGHT)

    def paint(self, painter: QPainter, option, index) -> None:
        item = index.data(RESULT_ROLE)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        rect = QRectF(option.rect.adjusted(3, 3, -3, -3))
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.setPen(QPen(QColor(COLOURS["accent"] if selected else COLOURS["border"]), 1))
        painter.setBrush(QColor("#1a2230" if selected else COLOURS["field"]))
        painter.drawRoundedRect(rect, 4, 4)
        if item is not None:
            key = (item.job_id, item.index)
            caption = QRectF(rect.left() + 8, rect.top() + 2, rect.width() - 16, self.CAPTION_HEIGHT)
            wave = QRectF(rect.left() + 6, caption.bottom() + 2, rect.width() - 12,
                          rect.height() - self.CAPTION_HEIGHT - 8)
            self._draw_caption(painter, caption, item, key)
            self._draw_region(painter, wave, item)
            painter.setPen(QPen(QColor(COLOURS["border"]), 1))
            painter.drawLine(QPointF(wave.left(), wave.center().y()), QPointF(wave.right(), wave.center().y()))
            if item.peaks is not None and len(item.peaks):
                self._draw_envelope(painter, wave, np.asarray(item.peaks), selected)
            if self.playing == key and item.duration > 0:
                x = wave.left() + wave.width() * min(1.0, max(0.0, self.position() / item.duration))
                painter.setPen(QPen(QColor(COLOURS["playhead"]), 1.5))
                painter.drawLine(QPointF(x, wave.top()), QPointF(x, wave.bottom()))
        painter.restore()

    def _draw_caption(self, painter: QPainter, caption: QRectF, item, key) -> None:
        x = caption.left()
        for name, mark in sorted(self.marks.items()):
            if mark == key:  # A / B badge
                badge = QRectF(x, caption.top() + 2, 16, caption.height() - 4)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(QColor(COLOURS["accent"] if name == "A" else COLOURS["region"]))
                painter.drawRoundedRect(badge, 3, 3)
                painter.setPen(QColor("#0c0f13"))
                painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, name)
                x += 20
        if self.playing == key:  # a drawn play triangle: no symbol font needed
            h = caption.height() - 8
            top = caption.top() + 4
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(COLOURS["ok"]))
            painter.drawPolygon(QPolygonF([QPointF(x, top), QPointF(x, top + h), QPointF(x + h * 0.9, top + h / 2)]))
            x += h + 6
        painter.setPen(QColor(COLOURS["text"]))
        text = QRectF(x, caption.top(), caption.right() - x, caption.height())
        metrics = painter.fontMetrics()
        painter.drawText(text, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         metrics.elidedText(item.label(), Qt.TextElideMode.ElideRight, int(text.width())))

    @staticmethod
    def _draw_region(painter: QPainter, wave: QRectF, item) -> None:
        if not item.region or item.duration <= 0:
            return
        x0 = wave.left() + wave.width() * item.region[0] / item.duration
        x1 = wave.left() + wave.width() * item.region[1] / item.duration
        colour = QColor(COLOURS["region"])
        fill = QColor(colour)
        fill.setAlpha(48)
        painter.fillRect(QRectF(x0, wave.top(), max(1.0, x1 - x0), wave.height()), fill)
        painter.setPen(QPen(colour, 1))
        for x in (x0, x1):
            painter.drawLine(QPointF(x, wave.top()), QPointF(x, wave.bottom()))

    @staticmethod
    def _draw_envelope(painter: QPainter, wave: QRectF, peaks: np.ndarray, selected: bool) -> None:
        """Peak envelope filled, RMS envelope filled brighter inside it, one column per pixel."""
        width = max(1, int(wave.width()))
        columns = np.minimum(len(peaks) - 1, (np.arange(width) * len(peaks)) // width)
        low, high = peaks[columns, 0], peaks[columns, 1]
        rms = peaks[columns, 2] if peaks.shape[1] > 2 else np.minimum(np.abs(low), np.abs(high)) * 0.7
        middle, half = wave.center().y(), wave.height() / 2 - 1
        xs = wave.left() + np.arange(width) + 0.5
        for top, bottom, colour in ((high, low, "wave_peak"), (rms, -rms, "wave_rms")):
            path = QPainterPath()
            path.moveTo(xs[0], middle - top[0] * half)
            for x, value in zip(xs[1:], top[1:]):
                path.lineTo(x, middle - value * half)
            for x, value in zip(xs[::-1], bottom[::-1]):
                path.lineTo(x, middle - value * half)
            path.closeSubpath()
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(COLOURS[colour + ("_selected" if selected else "")]))
            painter.drawPath(path)
