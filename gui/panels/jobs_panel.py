"""Jobs panel: the queue with a progress bar per job, cancel and the AutoGen toggle."""

from __future__ import annotations

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QTableView,
    QVBoxLayout,
)

from gui.jobs_model import JOB_ID_ROLE, PROGRESS_ROLE, JobsModel
from gui.theme import icon

PROGRESS_MIN_WIDTH = 150  # room for "diffusion 50/50" and "decoding 1/1"


class ProgressDelegate(QStyledItemDelegate):
    """Draws the progress column as a bar with the stage and step written on it."""

    def paint(self, painter, option, index) -> None:
        percent = index.data(PROGRESS_ROLE)
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 3, -2, -3)
        bar.minimum, bar.maximum = 0, 100
        if percent is not None and percent < 0:
            bar.maximum = 0  # busy indicator: running, no step count yet
            bar.progress = 0
        else:
            bar.progress = int(percent or 0)
        metrics = option.fontMetrics
        bar.text = metrics.elidedText(str(index.data() or ""), Qt.TextElideMode.ElideRight,
                                      max(10, bar.rect.width() - 8))
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        bar.state = option.state | QStyle.StateFlag.State_Horizontal
        style = option.widget.style() if option.widget else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, option.widget)


class JobsPanel(QGroupBox):
    cancel_requested = pyqtSignal(str)              # job id
    open_requested = pyqtSignal(str)                # job id: fetch its results into the results list
    autogen_changed = pyqtSignal(str, bool)         # job id, enabled

    def __init__(self, model: JobsModel, parent=None):
        super().__init__("Jobs", parent)
        self.model = model
        self.table = QTableView()
        self.table.setModel(model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setItemDelegateForColumn(JobsModel.PROGRESS_COLUMN, ProgressDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(JobsModel.PROGRESS_COLUMN, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(len(JobsModel.COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        header.resizeSection(JobsModel.PROGRESS_COLUMN, PROGRESS_MIN_WIDTH)
        header.setMinimumSectionSize(40)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setWordWrap(False)
        self.table.setColumnHidden(JobsModel.STATE_COLUMN, True)  # the progress bar names the state
        self.table.doubleClicked.connect(lambda index: self.open_requested.emit(index.data(JOB_ID_ROLE)))

        self.open_button = QPushButton("Open results")
        self.open_button.setIcon(icon("open"))
        self.open_button.setToolTip("Fetch the selected job's results into the list (also: double-click a job)")
        self.open_button.clicked.connect(self._open_selected)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setIcon(icon("cancel"))
        self.cancel_button.setToolTip("Cancel the selected job, or the newest unfinished one (Ctrl+.)")
        self.cancel_button.clicked.connect(self.cancel_current)
        self.autogen = QCheckBox("AutoGen")
        self.autogen.setToolTip("Keep making new variants of the job in the background until turned off.\n"
                                "Applies to new jobs and to the selected job.")
        self.autogen.toggled.connect(self._on_autogen)
        clear = QPushButton("Clear")
        clear.setToolTip("Remove finished jobs from the list (the engine keeps them)")
        clear.setIcon(icon("clear"))
        clear.clicked.connect(model.remove_finished)

        buttons = QHBoxLayout()
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.autogen)
        buttons.addStretch(1)
        buttons.addWidget(self.open_button)
        buttons.addWidget(clear)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        model.rowsInserted.connect(lambda *_: self.table.scrollToBottom())

    def selected_job_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(JOB_ID_ROLE) if rows else None

    def current_job_id(self) -> str | None:
        """The selected job, else the newest unfinished one."""
        selected = self.selected_job_id()
        if selected:
            return selected
        active = self.model.active_jobs()
        return active[-1].job_id if active else None

    def _open_selected(self) -> None:
        job_id = self.selected_job_id()
        if job_id:
            self.open_requested.emit(job_id)

    def cancel_current(self) -> None:
        job_id = self.current_job_id()
        if job_id:
            self.cancel_requested.emit(job_id)

    def _on_autogen(self, enabled: bool) -> None:
        """On: new jobs get AutoGen, and so does the selected job. Off: every running chain stops."""
        if enabled:
            job_id = self.selected_job_id()
            if job_id:
                self.autogen_changed.emit(job_id, True)
            return
        for row in self.model.active_jobs():
            if row.autogen:
                self.autogen_changed.emit(row.job_id, False)
