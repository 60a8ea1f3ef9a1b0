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
from PyQt6.QtWidgets import (QLabel, QMainWindow, QScrollArea, QSplitter, QVBoxLayout, QWidget)

from engine.request import RequestError
from gui.app import make_client
from gui.audio import AudioPlayer
from gui.bridge_link import BridgeLink
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
from gui.waveform import read_peaks



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

        # ---- panels
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.hide()
        self.host_panel = HostPanel()
        self.prompt_panel = PromptPanel()
        self.jobs_panel = JobsPanel(self.jobs_model)
        self.results_panel = ResultsPanel(self.results_model, self.player)
        if bridge is None:
            self.results_panel.set_insert_available(False, "No bridge running: drag the variant into the DAW")

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.host_panel)
        left_layout.addWidget(self.prompt_panel)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.prompt_panel.tasks_box)
        right.addWidget(self.jobs_panel)
        right.addWidget(self.results_panel)
        right.setCollapsible(0, False)
        right.setSizes([110, 230, 420])
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(scroll)
        split.addWidget(right)
        split.setSizes([600, 680])
        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(4, 0, 4, 4)
        central_layout.addWidget(self.banner)
        central_layout.addWidget(split, 1)
        self.setCentralWidget(central)
        self.resize(1280, 860)
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
        self.prompt_panel.load_models_requested.connect(self._load_models)
        self.jobs_panel.cancel_requested.connect(self.link.cancel)
        self.jobs_panel.autogen_changed.connect(self.link.set_autogen)
        self.results_panel.recall_requested.connect(
            lambda item: self.prompt_panel.recall(item.request, item.seed))
        self.results_panel.insert_requested.connect(self.insert_into_daw)
        self.results_panel.device_changed.connect(self._on_device)
        self.player.error.connect(self.show_error)
        self._build_menu_and_shortcuts()

        self.bridge_link = BridgeLink(bridge, self.runner, parent=self) if bridge is not None else None
        if self.bridge_link is not None:
            self.bridge_link.host_snapshot.connect(self.host_panel.apply_snapshot)
            self.bridge_link.adapters_changed.connect(self._on_adapters)
            self.bridge_link.bridge_event.connect(self._on_bridge_event)
            self.bridge_link.error.connect(self.show_error)
            self.bridge_link.start()
        self.link.start()

    # ---------------------------------------------------------------- setup
    def _build_menu_and_shortcuts(self) -> None:
        menu = self.menuBar().addMenu("&File")
        settings_action = QAction("Settings…", self)
        settings_action.setShortcut(QKeySequence("Ctrl+,"))
        settings_action.triggered.connect(self.open_settings)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        menu.addAction(settings_action)
        menu.addAction(quit_action)

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

    def _on_submitted(self, job_id: str) -> None:
        self.last_job_id = job_id
        self._live_jobs.add(job_id)
        self.statusBar().showMessage(f"Job {job_id[:8]} queued")

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
        self.link.load_models(dit, lm, on_done=lambda _: self.statusBar().showMessage("Models loaded"))

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

    # ------------------------------------------------------------ callbacks
    def _on_connection(self, connected: bool, message: str) -> None:
        self.host_panel.set_engine_status(connected, message)
        if connected:
            self.banner.hide()
            self.statusBar().showMessage(message, 5000)
        else:
            self.banner.setText(f"⚠ {message}\nReconnecting automatically; the engine keeps queued work "
                                "and results appear here when it is back.")
            self.banner.show()
            self.statusBar().showMessage("Engine disconnected")

    def _on_health(self, health: dict) -> None:
        self.prompt_panel.show_loaded_models(health.get("dit"), health.get("lm"))

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

    def watch_engine_process(self, process) -> None:
        """Show the engine log tail in the banner if the engine we started exits."""
        self._engine_process = process

        def check() -> None:
            if not process.running():
                timer.stop()
                self.banner.setText(f"⚠ The engine process exited (code {process.process.returncode}). "
                                    f"Last lines of {process.log_path}:\n{process.log_tail(6)}")
                self.banner.show()

        timer = QTimer(self)
        timer.setInterval(1000)
        timer.timeout.connect(check)
        timer.start()

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
