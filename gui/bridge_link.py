"""`BridgeLink`: the window's side of the in-process DAW bridge; bridge threads' news hops to the UI thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from gui.tasks import TaskRunner

HOST_ADAPTERS = ("reaper", "ableton", "midi")
# The UDP ports the bridge listens on: part -> (Settings field, what the port is for)
LISTEN_PORTS = {
    "commands": ("osc_command_port", "the bridge's OSC command port"),
    "reaper": ("reaper_listen_port", "REAPER's OSC feedback port"),
    "ableton": ("ableton_listen_port", "the AbletonOSC reply port"),
}
_IN_USE = ("address already in use", "errno 98", "errno 48", "errno 10048", "only one usage of each socket")


def port_in_use(error: str) -> bool:
    return any(words in error.lower() for words in _IN_USE)


def explain_port_clash(part: str, settings: Any) -> str:
    """What to tell the musician when a bridge port is taken: which port, and what to do."""
    field, meaning = LISTEN_PORTS[part]
    port = getattr(settings, field)
    return (f"DAW bridge: UDP port {port} ({meaning}) is in use by another program, probably another "
            f"ace-companion or `ace-companion bridge`. Close that program, or choose another port in "
            f"File > Settings (and the same one in the DAW's OSC setup), then restart ACE Companion.")


class BridgeLink(QObject):
    """Wraps a `bridge.app.BridgeApp`: host state, adapter status, actions, clips and insertion."""

    host_snapshot = pyqtSignal(dict)     # HostState.snapshot() after every change
    adapters_changed = pyqtSignal(dict)  # BridgeApp.adapters_status(), once a second
    bridge_event = pyqtSignal(dict)      # BridgeApp.subscribe events (job, progress, result, error, offer, done)
    error = pyqtSignal(str)

    def __init__(self, bridge: Any, runner: TaskRunner, poll_ms: int = 1000, parent: QObject | None = None):
        super().__init__(parent)
        self.bridge = bridge
        self.runner = runner
        self.status: dict[str, dict[str, Any]] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    def start(self) -> None:
        state = self.bridge.host_state
        self._unsubscribe.append(state.subscribe(lambda _changed: self._hop(self.host_snapshot,
                                                                            state.snapshot())))
        self._unsubscribe.append(self.bridge.subscribe(lambda event: self._hop(self.bridge_event, dict(event))))
        self.host_snapshot.emit(state.snapshot())
        self._timer.start()
        self.poll()

    def stop(self) -> None:
        self._timer.stop()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    def _hop(self, signal, payload: dict) -> None:
        """Called on bridge threads: emitting a signal of this UI-thread object queues the delivery."""
        if self.runner.closed:
            return
        try:
            signal.emit(payload)
        except RuntimeError:  # the window is gone
            pass

    def poll(self) -> None:
        try:
            self.status = self.bridge.adapters_status()
        except Exception as exc:  # another component: report it, keep the window alive
            self.error.emit(f"Bridge status unavailable: {exc}")
            return
        self.adapters_changed.emit(self.status)

    def daw_connected(self) -> bool:
        return any((self.status.get(name) or {}).get("connected") for name in HOST_ADAPTERS)

    def run_action(self, action: str, overrides: dict, on_job: Callable[[str], None],
                   on_error: Callable[[BaseException], None]) -> None:
        """`BridgeApp.run_action` on a worker (it may wait for the DAW to render the selection)."""
        self.runner.run(lambda: self.bridge.run_action(action, overrides), on_job, on_error)

    def insert(self, path: str, position_s: float | None, on_done: Callable[[Any], None],
               on_error: Callable[[BaseException], None]) -> None:
        self.runner.run(lambda: self.bridge.insert_result(path, position_s=position_s), on_done, on_error)
