"""`ResultsModel`: rendered variants (one row each) with their file, seed, request and peaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PyQt6.QtCore import QAbstractListModel, QMimeData, QModelIndex, Qt, QUrl

from engine.units import resolve_region_end_s

RESULT_ROLE = Qt.ItemDataRole.UserRole + 10


@dataclass
class ResultItem:
    job_id: str
    index: int
    seed: int | None
    path: str
    duration: float
    sample_rate: int
    request: dict = field(default_factory=dict)
    peaks: np.ndarray | None = None           # [columns, 2] min/max in -1..1, see waveform.compute_peaks
    region: tuple[float, float] | None = None  # seconds inside the file that were (re)generated
    position_s: float | None = None  # project time the file belongs at (bridge clips), if known

    @property
    def task(self) -> str:
        return str(self.request.get("task_type", "text2music"))

    def label(self) -> str:
        seed = "random" if self.seed is None else str(self.seed)
        return (f"Variant {self.index + 1} · {self.task} · {self.duration:.1f} s · seed {seed} · "
                f"job {self.job_id[:8]}")


def region_of(request: dict[str, Any], duration: float) -> tuple[float, float] | None:
    """The part of a result the request changed: the repaint window for repaint, else None."""
    if request.get("task_type") != "repaint":
        return None
    # The engine's rule (engine.units): a negative start pads the source on the left and shifts the
    # region by that much; a missing or negative end is the end of the source.
    start_s = float(request.get("repainting_start") or 0.0)
    left_pad_s = max(0.0, -start_s)
    end = request.get("repainting_end")
    end_s = resolve_region_end_s(None if end is None else float(end), duration - left_pad_s) + left_pad_s
    start_s, end_s = start_s + left_pad_s, min(end_s, duration)
    return (start_s, end_s) if end_s > start_s else None


class ResultsModel(QAbstractListModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._items: list[ResultItem] = []

    # --------------------------------------------------------------- domain
    def add(self, item: ResultItem) -> int:
        """Add (or replace) a variant; returns its row."""
        for number, existing in enumerate(self._items):
            if existing.job_id == item.job_id and existing.index == item.index:
                self._items[number] = item
                self.dataChanged.emit(self.index(number), self.index(number))
                return number
        position = self._position_for(item)
        self.beginInsertRows(QModelIndex(), position, position)
        self._items.insert(position, item)
        self.endInsertRows()
        return position

    def _position_for(self, item: ResultItem) -> int:
        """Newest job on top; the variants of one job stay together in index order."""
        same_job = [n for n, existing in enumerate(self._items) if existing.job_id == item.job_id]
        if not same_job:
            return 0
        for n in same_job:
            if self._items[n].index > item.index:
                return n
        return same_job[-1] + 1

    def item(self, row: int) -> ResultItem | None:
        return self._items[row] if 0 <= row < len(self._items) else None

    def items(self) -> list[ResultItem]:
        return list(self._items)

    def clear(self) -> None:
        self.beginResetModel()
        self._items = []
        self.endResetModel()

    # ============================================================ Model interface
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        item = self.item(index.row()) if index.isValid() else None
        if item is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return item.label()
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{item.path}\n{item.request.get('caption', '')}"
        if role == RESULT_ROLE:
            return item
        return None

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def mimeTypes(self) -> list[str]:
        return ["text/uri-list"]

    def mimeData(self, indexes) -> QMimeData:
        """File URLs of the dragged variants, which DAWs accept as audio drops."""
        mime = QMimeData()
        rows = sorted({index.row() for index in indexes if index.isValid()})
        mime.setUrls([QUrl.fromLocalFile(self._items[r].path) for r in rows if self.item(r) is not None])
        return mime
