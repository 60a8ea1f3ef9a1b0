"""`JobsModel`: the engine's jobs as table rows (id, task, state, progress, details)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PyQt6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PyQt6.QtGui import QColor

FINAL_STATES = ("done", "failed", "cancelled")
PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 1   # int 0..100, or -1 for "busy, no step count"
JOB_ID_ROLE = Qt.ItemDataRole.UserRole + 2

# Short enough to fit a progress bar with its step count ("decoding 1/1").
STAGE_WORDS = {
    "load": "loading",
    "lm_cot": "planning",
    "lm_codes": "LM codes",
    "encode_text": "text",
    "encode_audio": "encoding",
    "diffusion": "diffusion",
    "decode": "decoding",
    "postprocess": "finishing",
}


@dataclass
class JobRow:
    job_id: str
    task: str = ""
    state: str = "queued"
    priority: str = "interactive"
    stage: str = ""
    step: int = 0
    total: int = 0
    message: str = ""
    error: str | None = None
    autogen: bool = False
    queue_position: int | None = None
    results: list[dict] = field(default_factory=list)
    request: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def percent(self) -> int:
        if self.state == "done":
            return 100
        if self.state in ("queued", "failed", "cancelled"):
            return 0
        if self.total > 0:
            return max(0, min(100, round(100 * self.step / self.total)))
        return -1

    def progress_text(self) -> str:
        if self.state == "queued":
            return f"waiting, #{self.queue_position}" if self.queue_position else "waiting"
        if self.state == "running":
            words = STAGE_WORDS.get(self.stage, self.stage or "starting")
            return f"{words} {self.step}/{self.total}" if self.total > 0 else words
        return self.state

    def details(self) -> str:
        if self.state == "failed":
            return plain_error(self.error)
        if self.state == "done":
            count = len(self.results)
            return f"{count} result{'s' if count != 1 else ''}"
        return self.message

    def update(self, job: dict[str, Any]) -> None:
        request = job.get("request")
        if isinstance(request, dict) and request:
            self.request = request
            self.task = request.get("task_type", self.task) or self.task
        self.state = job.get("state", self.state) or self.state
        self.priority = job.get("priority", self.priority) or self.priority
        progress = job.get("progress") or {}
        if isinstance(progress, dict):
            self.stage = progress.get("stage") or self.stage
            self.step = _int(progress.get("step"), self.step)
            self.total = _int(progress.get("total"), self.total)
            self.message = progress.get("message") or self.message
        if "error" in job:
            self.error = job.get("error")
        position = job.get("queue_position")
        # the engine counts from 1 (the running job included); 0 = not waiting
        self.queue_position = position if isinstance(position, int) and position > 0 else None
        if "autogen" in job:
            self.autogen = bool(job.get("autogen"))
        if isinstance(job.get("results"), list) and job["results"]:
            self.results = job["results"]


def plain_error(error: str | None) -> str:
    """An engine error as a short sentence: first line, field errors spelled out."""
    if not error:
        return "failed (no reason given)"
    line = str(error).strip().splitlines()[0]
    if line.startswith("Traceback"):
        lines = [text for text in str(error).strip().splitlines() if text.strip()]
        line = lines[-1] if lines else line
    for prefix in ("RequestError: ", "EngineError: ", "CheckpointError: "):
        if line.startswith(prefix):
            line = line[len(prefix):]
    if "out of memory" in line.lower() or "outofmemory" in line.lower():
        return "Out of memory: try a shorter duration, a smaller batch or a smaller LM."
    return line[:300]


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class JobsModel(QAbstractTableModel):
    COLUMNS = ("Job", "Task", "State", "Progress", "Details")
    STATE_COLUMN = 2
    PROGRESS_COLUMN = 3

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[JobRow] = []
        self._index: dict[str, int] = {}

    # --------------------------------------------------------------- domain
    def update_job(self, job: dict[str, Any]) -> JobRow | None:
        """Insert or update the row for `job["id"]`; returns the row."""
        job_id = job.get("id")
        if not job_id:
            return None
        row_number = self._index.get(job_id)
        if row_number is None:
            row = JobRow(job_id=job_id)
            row.update(job)
            position = len(self._rows)
            self.beginInsertRows(QModelIndex(), position, position)
            self._rows.append(row)
            self._index[job_id] = position
            self.endInsertRows()
            return row
        row = self._rows[row_number]
        row.update(job)
        self.dataChanged.emit(self.index(row_number, 0), self.index(row_number, len(self.COLUMNS) - 1))
        return row

    def job(self, job_id: str) -> JobRow | None:
        number = self._index.get(job_id)
        return self._rows[number] if number is not None else None

    def job_at(self, row: int) -> JobRow | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, job_id: str) -> int:
        return self._index.get(job_id, -1)

    def active_jobs(self) -> list[JobRow]:
        return [row for row in self._rows if not row.finished]

    def remove_finished(self) -> None:
        self.beginResetModel()
        self._rows = [row for row in self._rows if not row.finished]
        self._index = {row.job_id: n for n, row in enumerate(self._rows)}
        self.endResetModel()

    # ============================================================ Model interface
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        row = self.job_at(index.row()) if index.isValid() else None
        if row is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (row.job_id[:8], _task_label(row), row.state, row.progress_text(), row.details())[column]
        if role == PROGRESS_ROLE:
            return row.percent()
        if role == JOB_ID_ROLE:
            return row.job_id
        if role == Qt.ItemDataRole.ToolTipRole:
            return row.error if row.state == "failed" and row.error else row.job_id
        if role == Qt.ItemDataRole.ForegroundRole:
            if row.state == "failed":
                return QColor("#ff7b72")
            if row.state == "cancelled":
                return QColor("#8b949e")
        return None


def _task_label(row: JobRow) -> str:
    label = row.task or "?"
    track = row.request.get("track_name") if row.request else None
    if track:
        label += f" ({track})"
    if row.autogen:
        label += " (auto)"
    return label
