"""`MainWindow`: assembles the panels and wires them to the engine link, the bridge and the player."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any

import soundfile as sf
from PyQt6.QtCore import QByteArray, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.request import RequestError
from gui.app import make_client
from gui.audio import AudioPlayer
from gui.bridge_link import LISTEN_PORTS, BridgeLink, explain_port_clash, port_in_use
from gui.engine_link import FINAL_STATES, EngineLink
from gui.jobs_model import JobsModel
from gui.panels.host_panel import HostPanel
from gui.panels.jobs_panel import JobsPanel
from gui.panels.prompt_panel import ACTION_SHORTCUTS, PromptPanel
from gui.panels.results_panel import ResultsPanel
from gui.request_builder import bridge_overrides, build_requests
from gui.results_model import ResultItem, ResultsModel, region_of
from gui.settings import Settings, save_settings
from gui.tasks import TaskRunner, describe_error
from gui.theme import icon
from gui.waveform import read_peaks

TINY_WARNING = "tiny random weights: output is noise"  # engine.checkpoints.TINY_WARNING, as /health says it
NO_WEIGHTS_HELP = ("Get the weights with `ace-companion download` (about 6.3 GB), or try the flow at once "
                   "with tiny random ones: `ace-companion make-tiny-checkpoints checkpoints` (they render "
                   "noise). Then choose Engine > Restart.")
COLUMN_WIDTHS = (418, 380, 460)  # at 1280 px: prompt | parameters and tasks | jobs and results


class Banner(QFrame):
    """A warning strip above the panels: an icon, the text, and a close button."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("banner")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 6, 6, 6)
        mark = QLabel()
        mark.setPixmap(icon("warning").pixmap(20, 20))
        mark.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setIcon(icon("close"))
        close.setToolTip("Hide this message")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout.addWidget(mark)
        layout.addWidget(self.label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def text(self) -> str:
        return self.label.text()

    def show_text(self, text: str) -> None:
        self.label.setText(text)
        self.setVisible(bool(text))



class MainWindow(QMainWindow):
    """The control window. `client` is an `engine.client.EngineClient`; `bridge` a `BridgeApp` or None."""

    result_added = pyqtSignal(object)  # ResultItem

    def __init__(self, settings: Settings, client: Any, bridge: Any = None,
                 settings_path: str | os.PathLike | None = None, poll_ms: int = 2000, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.settings_path = settings_path
        self.bridge = bridge  # a bridge.app.BridgeApp, or None
        self.started_at = time.time()
        self.setWindowTitle("ACE Companion")
        self.runner = TaskRunner(self)
        self.runner.failed.connect(self.show_error)
        self.link = EngineLink(client, self.runner, poll_ms=poll_ms, parent=self)
        self.jobs_model = JobsModel(self)
        self.results_model = ResultsModel(self)
        self.player = AudioPlayer(self.runner, self)
        self.player.set_device(settings.audio_device or None)
        self.last_job_id: str | None = None  # the newest job this window started
        self._downloads: set[tuple[str, int]] = set()
        self._live_jobs: set[str] = set()
        self._announced_failures: set[str] = set()
        self._bridge_jobs: set[str] = set()  # jobs whose results the bridge turns into clips itself
        self._last_state_shown: tuple[str, str] | None = None

        # ---- panels
        self.banner = Banner()
        self._banner_parts: dict[str, str] = {}  # engine / engine_exit / bridge -> text, shown together
        self.host_panel = HostPanel()
        self.prompt_panel = PromptPanel()
        self.jobs_panel = JobsPanel(self.jobs_model)
        self.results_panel = ResultsPanel(self.results_model, self.player)
        if bridge is None:
            self.results_panel.set_insert_available(False, "No bridge running: drag the variant into the DAW")
        self.tiny_badge = QLabel(TINY_WARNING)
        self.tiny_badge.setObjectName("tiny_badge")
        self.tiny_badge.setToolTip("The engine loaded checkpoints from `make-tiny-checkpoints`. "
                                   "`ace-companion download` fetches the real weights.")
        self.tiny_badge.hide()
        self.statusBar().addPermanentWidget(self.tiny_badge)

        # Three columns; each is a scroll area so a small screen still reaches everything. A new
        # small panel goes in with `add_panel(widget, column)`.
        self.columns: list[QVBoxLayout] = []
        split = QSplitter(Qt.Orientation.Horizontal)
        split.setChildrenCollapsible(False)
        for _ in COLUMN_WIDTHS[:2]:
            holder = QWidget()
            column = QVBoxLayout(holder)
            column.setContentsMargins(0, 0, 4, 0)
            column.setSpacing(6)
            column.addStretch(1)
            scroll = QScrollArea()
            scroll.setWidget(holder)
            scroll.setWidgetResizable(True)
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)  # only below ~1200 px
            scroll.setMinimumWidth(220)
            split.addWidget(scroll)
            self.columns.append(column)
        from gui.panels.jam_panel import JamPanel
        from gui.panels.sketch_panel import SketchPanel
        self.sketch_panel = SketchPanel()
        self.sketch_panel.watch_drops(self)
        self.jam_panel = JamPanel()
        # Jam and Sketch -> part (gui/panels/jam_panel.py, sketch_panel.py) above the jobs they make
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.jam_panel)
        right.addWidget(self.sketch_panel)
        right.setChildrenCollapsible(False)
        right.addWidget(self.jobs_panel)
        right.addWidget(self.results_panel)
        for index, stretch in enumerate((0, 0, 2, 3)):
            right.setStretchFactor(index, stretch)
        right.setSizes([80, 80, 220, 340])
        split.addWidget(right)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 0)
        split.setStretchFactor(2, 1)
        split.setSizes(list(COLUMN_WIDTHS))
        self.splitter = split
        self.add_panel(self.host_panel, 0)
        self.add_panel(self.prompt_panel, 0, stretch=1)
        self.add_panel(self.prompt_panel.tasks_box, 1)
        self.add_panel(self.prompt_panel.params_box, 1)
        self.add_panel(self.prompt_panel.lm_box, 1)
        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(6, 4, 6, 4)
        central_layout.setSpacing(4)
        central_layout.addWidget(self.banner)
        central_layout.addWidget(split, 1)
        self.setCentralWidget(central)
        self.resize(1280, 800)
        if settings.window_geometry:
            self.restoreGeometry(QByteArray.fromHex(settings.window_geometry.encode()))
        self.statusBar().showMessage(f"Connecting to the engine at {self.link.base_url}…")

        # ---- wiring
        self.link.connection_changed.connect(self._on_connection)
        self.link.job_updated.connect(self._on_job)
        self.link.models_changed.connect(self._on_models)
        self.link.health_changed.connect(self._on_health)
        self.link.error.connect(self.show_error)
        self.prompt_panel.action_requested.connect(self.run_action)
        self.sketch_panel.sketch_requested.connect(self.run_sketch)
        self.jam_panel.start_requested.connect(self.start_jam)
        self.jam_panel.stop_requested.connect(self.stop_jam)
        self._jam_caption_timer = QTimer(self)  # the caption box steers the next jam chunk
        self._jam_caption_timer.setSingleShot(True)
        self._jam_caption_timer.setInterval(600)
        self._jam_caption_timer.timeout.connect(self._steer_jam)
        self.prompt_panel.caption.textChanged.connect(
            lambda: self._jam_caption_timer.start() if self.jam_panel.running else None)
        self.prompt_panel.load_models_requested.connect(self._load_models)
        self.jobs_panel.cancel_requested.connect(self.link.cancel)
        self.jobs_panel.autogen_changed.connect(self.link.set_autogen)
        self.results_panel.recall_requested.connect(
            lambda item: self.prompt_panel.recall(item.request, item.seed))
        self.results_panel.insert_requested.connect(self.insert_into_daw)
        self.results_panel.device_changed.connect(self._on_device)
        self.results_panel.message.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.jobs_panel.open_requested.connect(self.open_job_results)
        self.player.error.connect(self.show_error)
        self._build_menu_and_shortcuts()

        self._engine_process = None  # an engine.process.EngineProcess the launcher started, if any
        self._restart_policy = None
        self._restart_timer = QTimer(self)
        self._restart_timer.setSingleShot(True)
        self._restart_timer.timeout.connect(self._restart_now)
        self.bridge_link = BridgeLink(bridge, self.runner, parent=self) if bridge is not None else None
        if self.bridge_link is not None:
            self.bridge_link.host_snapshot.connect(self.host_panel.apply_snapshot)
            self.bridge_link.host_snapshot.connect(self.jam_panel.apply_snapshot)
            self.bridge_link.adapters_changed.connect(self._on_adapters)
            self.bridge_link.bridge_event.connect(self._on_bridge_event)
            self.bridge_link.error.connect(self.show_error)
            self.bridge_link.start()
        self.link.start()

    # ---------------------------------------------------------------- setup
    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not getattr(self, "_columns_sized", False):  # the column widths, once the window has its size
            self._columns_sized = True
            spare = max(0, self.splitter.width() - sum(COLUMN_WIDTHS))
            self.splitter.setSizes([COLUMN_WIDTHS[0] + spare // 5, COLUMN_WIDTHS[1] + spare // 5,
                                    COLUMN_WIDTHS[2] + spare - 2 * (spare // 5)])

    def add_panel(self, widget: QWidget, column: int, stretch: int = 0) -> None:
        """Place a panel at the bottom of a left column (0: prompt, 1: parameters and tasks)."""
        layout = self.columns[column]
        layout.insertWidget(layout.count() - 1, widget, stretch)
        if stretch:
            layout.setStretch(layout.count() - 1, 0)  # the panel takes the spare height, not the spacer

    def _build_menu_and_shortcuts(self) -> None:
        menu = self.menuBar().addMenu("&File")
        settings_action = QAction(icon("settings"), "Settings…", self)
        settings_action.setShortcut(QKeySequence("Ctrl+,"))
        settings_action.triggered.connect(self.open_settings)
        quit_action = QAction(icon("quit"), "Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        menu.addAction(settings_action)
        menu.addSeparator()
        menu.addAction(quit_action)

        engine = self.menuBar().addMenu("&Engine")
        self.restart_action = QAction(icon("restart"), "Restart", self)
        self.restart_action.setToolTip("Stop the engine this window started and start it again: every model "
                                       "is loaded afresh from the checkpoints folder")
        self.restart_action.triggered.connect(self.restart_engine)
        self.reload_action = QAction("Reload models", self)
        self.reload_action.setToolTip("Load the models chosen under Models again (restarts an engine this "
                                      "window started)")
        self.reload_action.triggered.connect(self.reload_models)
        engine.addAction(self.restart_action)
        engine.addAction(self.reload_action)
        engine.setToolTipsVisible(True)
        self.restart_action.setEnabled(False)  # until the launcher hands over an engine it started

        tasks = self.menuBar().addMenu("&Tasks")
        for action, keys in ACTION_SHORTCUTS.items():
            item = QAction(self.prompt_panel.task_buttons[action].text(), self)
            item.setShortcut(QKeySequence(keys))
            item.triggered.connect(lambda _=False, a=action: self.run_action(a))
            tasks.addAction(item)
            self.addAction(item)
        extra = (("Ctrl+Return", lambda: self.run_action("generate")),
                 ("Ctrl+.", self.jobs_panel.cancel_current),
                 ("Ctrl+B", self.results_panel.switch_ab),
                 ("Ctrl+P", self.results_panel.toggle_play),
                 ("Escape", self.player.stop))
        self._shortcuts = []
        for keys, slot in extra:
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.activated.connect(slot)
            self._shortcuts.append(shortcut)

    # -------------------------------------------------------------- actions
    def run_action(self, action: str) -> None:
        """Start a task: through the bridge when a DAW is connected, else straight to the engine."""
        values = self.prompt_panel.values()
        host = self.host_panel.values()
        autogen = self.jobs_panel.autogen.isChecked()
        try:
            if self._use_bridge(values):
                overrides = bridge_overrides(action, values, host, self.host_panel.following())
                self.bridge_link.run_action(action, overrides,
                                            lambda job_id: self._on_bridge_job(job_id, action, overrides),
                                            lambda exc: self.show_error(f"{action}: {describe_error(exc)}"))
                self.statusBar().showMessage(f"{action}: asking the DAW for the selection…")
                return
            source_length = _audio_length(values.src_audio) if action == "continue" and values.src_audio else None
            requests = build_requests(action, values, host, source_duration_s=source_length)
        except (RequestError, OSError, RuntimeError) as exc:
            self.show_error(f"{action}: {exc}")
            return
        for request in requests:
            self.link.submit(request.to_dict(), autogen=autogen, on_submitted=self._on_submitted,
                             on_error=lambda exc: self.show_error(f"{action}: {describe_error(exc)}"))

    def run_sketch(self, settings: dict) -> None:
        """Sketch -> part through the bridge: the DAW's selected MIDI clip, or `settings["midi_path"]`."""
        if self.bridge_link is None:
            self.show_error("Sketch → part needs the bridge (start the window with a DAW bridge)")
            return
        try:
            values, host = self.prompt_panel.values(), self.host_panel.values()
            overrides = {**bridge_overrides("cover", values, host, self.host_panel.following()), **settings}
        except (RequestError, OSError, RuntimeError) as exc:
            self.show_error(f"sketch: {exc}")
            return
        overrides.pop("src_audio", None)
        self.bridge_link.run_action("sketch", overrides,
                                    lambda job_id: self._on_bridge_job(job_id, "sketch", overrides),
                                    lambda exc: self.show_error(f"sketch: {describe_error(exc)}"))
        self.statusBar().showMessage("sketch: reading the MIDI…")

    # -------------------------------------------------------------- jam (bridge/jam.py)
    def start_jam(self, settings: dict) -> None:
        if self.bridge_link is None:
            self.jam_panel.set_running(False, "needs the bridge (start the window with a DAW bridge)")
            return
        try:
            values, host = self.prompt_panel.values(), self.host_panel.values()
            fields = bridge_overrides("generate", values, host, self.host_panel.following())
        except (RequestError, OSError, RuntimeError) as exc:
            self.jam_panel.set_running(False, str(exc))
            return
        for name in ("duration", "task_type", "src_audio", "batch_size", "audio_cover_strength"):
            fields.pop(name, None)
        from bridge.jam import jam_controller
        bridge = self.bridge_link.bridge
        self.runner.run(lambda: jam_controller(bridge).start({**fields, **settings}),
                        on_error=lambda exc: self.jam_panel.set_running(False, describe_error(exc)))

    def stop_jam(self) -> None:
        if self.bridge_link is None:
            return
        from bridge.jam import jam_controller
        bridge = self.bridge_link.bridge
        self.runner.run(lambda: jam_controller(bridge).stop(),
                        on_error=lambda exc: self.show_error(f"jam: {describe_error(exc)}"))

    def _steer_jam(self) -> None:
        if self.bridge_link is None or not self.jam_panel.running:
            return
        from bridge.jam import jam_controller
        caption = self.prompt_panel.caption.toPlainText().strip()
        bridge = self.bridge_link.bridge
        self.runner.run(lambda: jam_controller(bridge).prompt(caption),
                        on_error=lambda exc: self.show_error(f"jam: {describe_error(exc)}"))

    def _on_submitted(self, job_id: str) -> None:
        self.last_job_id = job_id
        self._live_jobs.add(job_id)
        self.statusBar().showMessage(f"Job {job_id[:8]} queued", 10000)

    def _use_bridge(self, values) -> bool:
        return self.bridge_link is not None and not values.src_audio and self.bridge_link.daw_connected()

    def _on_bridge_job(self, job_id: str, action: str, overrides: dict) -> None:
        self.jobs_model.update_job({"id": job_id, "state": "queued", "request": overrides})
        self.last_job_id = job_id
        self._bridge_jobs.add(job_id)
        self._live_jobs.add(job_id)
        self.link.watch(job_id)
        self.statusBar().showMessage(f"{action}: job {job_id[:8]} queued by the bridge")

    def insert_into_daw(self, item: ResultItem) -> None:
        if self.bridge_link is None:
            self.show_error("No bridge running: drag the variant from the list into the DAW instead.")
            return
        position = item.position_s
        if position is None:  # an engine result: at the selection, else the play position, else bar 1
            selection = self.host_panel.selection()
            position = selection[0] if selection else float(self.host_panel.position_s() or 0.0)
        name = os.path.basename(item.path)

        def done(inserted) -> None:
            if inserted is False:
                self.show_error(f"No DAW could take {name}: drag it from the list instead.")
            else:
                self.statusBar().showMessage(f"Inserted {name} at {position:.2f} s")

        self.bridge_link.insert(item.path, position, done,
                                lambda exc: self.show_error(f"Insert failed: {describe_error(exc)}"))

    def _load_models(self, dit: str, lm: str | None) -> None:
        self.statusBar().showMessage(f"Loading {dit} + {lm or 'no LM'}…")
        self.link.load_models(dit, lm, on_done=lambda _: self.statusBar().showMessage("Models loaded", 10000))

    # ------------------------------------------------------------- engine
    def restart_engine(self) -> None:
        """Engine > Restart: only for the engine this window's launcher started."""
        if self._engine_process is None:
            self.show_error("This window did not start the engine, so it cannot restart it; restart it where "
                            "it runs.")
            return
        if self._restart_policy is not None:
            self._restart_policy.reset()
        self._restart_timer.stop()
        self._restart_now(reason="Restarting the engine")

    def reload_models(self) -> None:
        """Engine > Reload models: a restart for our own engine, else ask the engine to load the chosen models."""
        if self._engine_process is not None:
            self.restart_engine()
            return
        prompt = self.prompt_panel
        lm = prompt.lm_combo.currentText()
        self._load_models(prompt.dit_combo.currentText(), None if lm == "none" else lm)

    def _restart_now(self, reason: str = "") -> None:
        process = self._engine_process
        if process is None:
            return
        self._set_banner("engine_exit", "")
        self.statusBar().showMessage(f"{reason or 'Restarting the engine'} on {process.url}…")

        def done(_=None) -> None:
            if self._restart_policy is not None:
                self._restart_policy.started(time.monotonic())
            self._watch_timer.start()
            self.link.check_health()

        def failed(exc: BaseException) -> None:
            self.show_error(f"The engine could not be started: {describe_error(exc)}")
            self._watch_timer.start()  # still not running: the next check schedules the next attempt

        self._watch_timer.stop()
        self.runner.run(process.restart, done, failed)

    def open_settings(self) -> None:
        from gui.settings_dialog import SettingsDialog
        dialog = SettingsDialog(self.settings, self.player.devices, midi_input_names(), parent=self)
        if dialog.exec():
            self.apply_settings(dialog.result_settings())

    def apply_settings(self, new: Settings) -> None:
        """Take new settings; a changed engine URL or token reconnects with a new client."""
        old = self.settings
        self.settings = new
        self.player.set_device(new.audio_device or None)
        if (new.engine_url, new.engine_token) != (old.engine_url, old.engine_token):
            self.link.client = make_client(new)
            self.link.connected = None
            self.link.check_health()
        self.save_settings()

    def save_settings(self) -> None:
        try:
            save_settings(self.settings, self.settings_path)
        except OSError as exc:
            self.show_error(f"Settings not saved: {exc}")

    def show_error(self, message: str) -> None:
        self.statusBar().showMessage(message, 15000)

    def show_bridge_problem(self, message: str) -> None:
        """A bridge that could not start (e.g. a port in use) stays visible above the panels."""
        self._set_banner("bridge", message)

    def _set_banner(self, part: str, text: str) -> None:
        """The banner shows every current problem; one part never overwrites another."""
        if text:
            self._banner_parts[part] = text
        else:
            self._banner_parts.pop(part, None)
        order = ("engine_exit", "engine", "bridge")
        self.banner.show_text("\n\n".join(self._banner_parts[name] for name in order if name in self._banner_parts))

    # ------------------------------------------------------------ callbacks
    def _on_connection(self, connected: bool, message: str) -> None:
        self.host_panel.set_engine_status(connected, message)
        if connected:
            self._set_banner("engine", "")
            self._set_banner("engine_exit", "")
            self.statusBar().showMessage(message, 5000)
        else:
            if "engine_exit" in self._banner_parts:
                self._set_banner("engine", "")  # the exit message says more; keep it
            else:
                self._set_banner("engine", f"{message}\nReconnecting automatically; the engine keeps queued "
                                           "work and results appear here when it is back.")
            self.statusBar().showMessage("Engine disconnected")

    def _on_health(self, health: dict) -> None:
        self.prompt_panel.show_loaded_models(health.get("dit"), health.get("lm"))
        tiny = bool(health.get("tiny_weights"))
        self.tiny_badge.setText(str(health.get("warning") or TINY_WARNING))
        self.tiny_badge.setVisible(tiny)
        self.setWindowTitle("ACE Companion" + (f" ({TINY_WARNING})" if tiny else ""))

    def _on_models(self, models: dict) -> None:
        dits = models.get("dits") or models.get("dit_models") or models.get("available_dits")
        if isinstance(dits, list) and dits:
            names = [d if isinstance(d, str) else d.get("name") for d in dits]
            self.prompt_panel.set_available_dits([n for n in names if n])
        if isinstance(models.get("loras"), list):
            self.prompt_panel.set_available_loras([n for n in models["loras"] if isinstance(n, str)])
        lms = models.get("lms")
        if isinstance(lms, list):
            self.prompt_panel.set_available_lms([name for name in lms if isinstance(name, str)])

    def _on_job(self, job: dict) -> None:
        row = self.jobs_model.update_job(job)
        if row is None:
            return
        if job.get("state") not in FINAL_STATES:
            self._live_jobs.add(row.job_id)
        if not self._wants_results(job):
            return  # a job from before this window opened: listed, but not fetched or announced
        follow_up = job.get("autogen_next")
        if follow_up and follow_up not in self._live_jobs:  # AutoGen queued the next variant: follow it too
            self._live_jobs.add(follow_up)
            self.link.watch(follow_up)
        if self.last_job_id == row.job_id and job.get("state") in ("running", "cancelled"):
            words = "running" if job.get("state") == "running" else "cancelled"
            if self._last_state_shown != (row.job_id, words):
                self._last_state_shown = (row.job_id, words)
                self.statusBar().showMessage(f"Job {row.job_id[:8]} {words}", 10000)
        if job.get("state") == "done":
            if self.last_job_id == row.job_id:
                self.statusBar().showMessage(f"Job {row.job_id[:8]} done: {row.details()}", 10000)
            if row.job_id in self._bridge_jobs:
                return  # the bridge cuts this result to the grid and reports the clip (see _on_bridge_event)
            for result in job.get("results") or []:
                self._fetch_result(row.job_id, result, job.get("request") or row.request)
        elif job.get("state") == "failed" and row.job_id not in self._announced_failures:
            self._announced_failures.add(row.job_id)
            self.show_error(f"Job {row.job_id[:8]} failed: {row.details()}")

    def open_job_results(self, job_id: str | None) -> None:
        """Fetch a finished job's results into the list, also for jobs this window did not start."""
        row = self.jobs_model.job(job_id) if job_id else None
        if row is None:
            return
        if row.state != "done" or not row.results:
            self.statusBar().showMessage(f"Job {job_id[:8]} has no results ({row.progress_text()})", 8000)
            return
        self._live_jobs.add(row.job_id)
        for result in row.results:
            self._fetch_result(row.job_id, result, row.request)
        self.statusBar().showMessage(f"Fetching {len(row.results)} result(s) of job {job_id[:8]}…", 8000)

    def _wants_results(self, job: dict) -> bool:
        if job.get("id") in self._live_jobs:
            return True
        created = job.get("created_at")
        return isinstance(created, (int, float)) and created >= self.started_at

    def _fetch_result(self, job_id: str, result: dict, request: dict) -> None:
        index = int(result.get("index", 0))
        key = (job_id, index)
        if key in self._downloads:
            return
        self._downloads.add(key)
        dest = Path(self.settings.output_dir) / result_file_name(job_id, index, result, request)
        ref = result.get("url") or result.get("file_id")
        seed = result.get("seed")

        def done(outcome) -> None:
            path, (peaks, duration, rate) = outcome
            item = ResultItem(job_id=job_id, index=index, seed=seed, path=str(path), duration=duration,
                              sample_rate=rate, request=dict(request), peaks=peaks,
                              region=region_of(request, duration))
            self.results_model.add(item)
            self.result_added.emit(item)

        def failed(exc: BaseException) -> None:
            self._downloads.discard(key)
            self.show_error(f"Could not fetch result {index + 1} of job {job_id[:8]}: {describe_error(exc)}")

        self.link.download(ref, dest, done, failed, after=read_peaks)

    def watch_engine_process(self, process, policy=None) -> None:
        """Follow the engine the launcher started: when it dies, say why and restart it with backoff.

        An engine that stops because it has no weights is not restarted (it would stop again);
        the banner says how to get weights, and Engine > Restart tries again.
        """
        from engine.process import RestartPolicy
        self._engine_process = process
        self._restart_policy = policy or RestartPolicy()
        self._restart_policy.started(time.monotonic())
        self.restart_action.setEnabled(True)
        self._watch_timer = QTimer(self)
        self._watch_timer.setInterval(500)
        self._watch_timer.timeout.connect(self._check_engine_process)
        self._watch_timer.start()

    def _check_engine_process(self) -> None:
        process = self._engine_process
        if process is None or process.running() or self._restart_timer.isActive():
            return
        self._watch_timer.stop()
        tail = process.log_tail(6)
        text = f"The engine process exited (code {process.returncode}). Last lines of {process.log_path}:\n{tail}"
        no_weights = "cannot load models" in tail or "checkpoint folder not found" in tail
        delay = None if no_weights else self._restart_policy.next_delay(time.monotonic())
        if no_weights:
            text += f"\n{NO_WEIGHTS_HELP}"
        elif delay is None:
            text += "\nIt keeps stopping, so it is not restarted again; see the log, then choose Engine > Restart."
        else:
            text += (f"\nRestarting it in {delay:.0f} s (attempt {self._restart_policy.attempts} of "
                     f"{self._restart_policy.max_attempts}).")
            self._restart_timer.start(int(delay * 1000))
        self._set_banner("engine", "")
        self._set_banner("engine_exit", text)

    def _on_bridge_event(self, event: dict) -> None:
        kind = event.get("type")
        job_id = event.get("job_id")
        if kind == "job":
            for one in event.get("job_ids") or [job_id]:
                if one and one not in self._bridge_jobs:  # e.g. started by an OSC or MIDI trigger
                    self._bridge_jobs.add(one)
                    self._live_jobs.add(one)
                    self.link.watch(one)
        elif kind == "result" and event.get("path"):
            self._add_bridge_clip(event)
        elif kind == "error":
            self.show_error(f"Bridge: {event.get('message')}")
        elif str(kind).startswith("jam_"):
            self.jam_panel.apply_event(event)
        elif kind == "sketch":  # which synth rendered the MIDI sketch (a line when it is the built-in one)
            self.sketch_panel.show_message(f"{event.get('track_name')}: {event.get('notes')} notes. "
                                           f"{event.get('message')}")
        elif kind == "offer":
            self.show_error(f"{event.get('message')}: drag {os.path.basename(str(event.get('path')))} "
                            "from the list")

    def _add_bridge_clip(self, event: dict) -> None:
        job_id = str(event.get("job_id") or "bridge")
        row = self.jobs_model.job(job_id)
        request = dict(row.request) if row is not None else {}
        index = sum(1 for item in self.results_model.items() if item.job_id == job_id)
        path = str(event["path"])

        def done(peaks_info) -> None:
            peaks, duration, rate = peaks_info
            self.results_model.add(ResultItem(job_id=job_id, index=index, seed=event.get("seed"), path=path,
                                              duration=duration, sample_rate=rate, request=request, peaks=peaks,
                                              position_s=event.get("position_s")))
        self.runner.run(lambda: read_peaks(path), done,
                        lambda exc: self.show_error(f"Cannot read clip {path}: {describe_error(exc)}"))
        self.statusBar().showMessage(f"Clip {os.path.basename(path)}: {event.get('message') or 'ready'}", 10000)

    def _on_adapters(self, status: dict) -> None:
        self.host_panel.set_adapters_status(status)
        clashes = [explain_port_clash(name, self.settings) for name, entry in status.items()
                   if name in LISTEN_PORTS and port_in_use(str((entry or {}).get("error") or ""))]
        if "\n".join(clashes) != self._banner_parts.get("bridge", ""):
            self.show_bridge_problem("\n".join(clashes))
        connected = self.bridge_link.daw_connected()
        self.results_panel.set_insert_available(
            connected, "" if connected else "No DAW connected: drag the variant into the DAW instead")

    def _on_device(self, name: str) -> None:
        self.settings = dataclasses.replace(self.settings, audio_device=name)
        self.save_settings()

    def closeEvent(self, event) -> None:
        self.settings = dataclasses.replace(self.settings,
                                            window_geometry=bytes(self.saveGeometry().toHex()).decode())
        self.save_settings()
        if self.bridge_link is not None:
            self.bridge_link.stop()
        self.link.stop()
        self.player.stop()
        self.runner.close()
        super().closeEvent(event)


def result_file_name(job_id: str, index: int, result: dict, request: dict) -> str:
    """`<job>-<task>-v<n>-<seed>.<format>`: unique per variant, readable in a DAW's file browser."""
    task = re.sub(r"[^a-z0-9_]+", "", str(request.get("task_type", "result")).lower()) or "result"
    if request.get("track_name"):
        task += "-" + re.sub(r"[^a-z0-9_]+", "", str(request["track_name"]).lower())
    seed = result.get("seed")
    extension = re.sub(r"[^a-z0-9]+", "", str(result.get("format") or request.get("audio_format") or "wav"))
    return f"{job_id[:8]}-{task}-v{index + 1}-{seed if seed is not None else 'x'}.{extension or 'wav'}"


def midi_input_names() -> list[str]:
    """MIDI inputs for the settings dialog; empty when no MIDI backend (python-rtmidi) is installed."""
    try:
        import mido
        return list(mido.get_input_names())
    except Exception:  # ImportError of the backend, or a system without MIDI: type the name by hand
        return []


def _audio_length(path: str) -> float:
    info = sf.info(path)
    return info.frames / float(info.samplerate)
