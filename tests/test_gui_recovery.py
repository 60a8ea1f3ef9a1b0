"""The window recovers: restarts the engine it started (with backoff), says why an engine stopped
without overwriting it, explains a bridge port clash, and opens results of jobs it did not start.
No engine is needed: a stand-in process object and a UDP socket play the parts."""

from __future__ import annotations

import socket

import pytest

from engine.process import RestartPolicy
from gui.settings import Settings
from tests.gui_helpers import qt_app, wait_for


class StandInProcess:
    """Looks like engine.process.EngineProcess to the window: dies on demand, restarts when asked."""

    def __init__(self, log_tail: str = "engine: serving http://127.0.0.1:1"):
        self.alive = True
        self.restarts = 0
        self.tail = log_tail
        self.url = "http://127.0.0.1:1"
        self.log_path = "/tmp/engine.log"

    @property
    def returncode(self):
        return None if self.alive else -9

    def running(self) -> bool:
        return self.alive

    def log_tail(self, lines: int = 20) -> str:
        return self.tail

    def restart(self):
        self.restarts += 1
        self.alive = True
        return self


@pytest.fixture
def window(tmp_path):
    qt_app()
    from engine.client import EngineClient
    from gui.main_window import MainWindow
    win = MainWindow(Settings(output_dir=str(tmp_path / "out")), EngineClient("http://127.0.0.1:1", timeout=1),
                     settings_path=tmp_path / "gui.json", poll_ms=100)
    win.show()
    yield win
    win.close()


def test_policy_backs_off_gives_up_and_forgives_a_long_run():
    policy = RestartPolicy(delays_s=(1.0, 2.0, 5.0), max_attempts=4, stable_s=60.0)
    policy.started(0.0)
    assert [policy.next_delay(1.0) for _ in range(5)] == [1.0, 2.0, 5.0, 5.0, None]
    policy.started(100.0)
    assert policy.next_delay(200.0) == 1.0  # up for 100 s: healthy again


def test_the_window_restarts_an_engine_it_started_when_it_dies(window):
    process = StandInProcess()
    window.watch_engine_process(process, RestartPolicy(delays_s=(0.05,), max_attempts=3))
    assert window.restart_action.isEnabled()
    process.alive = False
    assert wait_for(lambda: "exited" in window.banner.text(), 10)
    assert "Restarting it in" in window.banner.text() and "attempt 1 of 3" in window.banner.text()
    # the link noticing the disconnect must not overwrite why the engine stopped
    window.link.connection_changed.emit(False, "The engine is not answering")
    assert "exited" in window.banner.text()
    assert wait_for(lambda: process.restarts == 1, 10)
    assert wait_for(lambda: "exited" not in window.banner.text(), 10)

    window.restart_action.trigger()  # Engine > Restart by hand
    assert wait_for(lambda: process.restarts == 2, 10)


def test_an_engine_without_weights_is_not_restarted_and_the_banner_says_how_to_get_them(window):
    process = StandInProcess("ace-companion engine: cannot load models: checkpoints/vae: checkpoint folder "
                             "not found; run `ace-companion download`")
    window.watch_engine_process(process, RestartPolicy(delays_s=(0.05,)))
    process.alive = False
    assert wait_for(lambda: "exited" in window.banner.text(), 10)
    text = window.banner.text()
    assert "make-tiny-checkpoints" in text and "ace-companion download" in text and "Engine > Restart" in text
    wait_for(lambda: False, 0.3)
    assert process.restarts == 0
    window.reload_action.trigger()  # after adding weights: Reload models restarts our engine
    assert wait_for(lambda: process.restarts == 1, 10)


def test_a_window_without_its_own_engine_cannot_restart_it(window):
    assert not window.restart_action.isEnabled()
    window.restart_engine()
    assert "did not start the engine" in window.statusBar().currentMessage()


def test_tiny_weights_are_named_in_the_window(window):
    window._on_health({"dit": "acestep-v15-turbo", "tiny_weights": True,
                       "warning": "tiny random weights: output is noise"})
    assert not window.tiny_badge.isHidden() and "output is noise" in window.tiny_badge.text()
    assert "output is noise" in window.windowTitle()
    window._on_health({"dit": "acestep-v15-turbo", "tiny_weights": False})
    assert window.tiny_badge.isHidden()


def _busy_udp_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_a_bridge_port_clash_is_shown_with_the_port_and_what_to_do(tmp_path):
    qt_app()
    from engine.client import EngineClient
    from engine.process import free_port
    from gui.launcher import start_bridge
    from gui.main_window import MainWindow
    client = EngineClient("http://127.0.0.1:1", timeout=1)
    with _busy_udp_port() as taken:
        port = taken.getsockname()[1]
        # the command port taken: the bridge cannot start at all
        settings = Settings(output_dir=str(tmp_path / "out"), host="reaper", osc_command_port=port,
                            reaper_listen_port=free_port())
        bridge, problem = start_bridge(settings, client)
        assert bridge is None and str(port) in problem and "Settings" in problem
        win = MainWindow(settings, client, settings_path=tmp_path / "gui.json")
        try:
            win.show_bridge_problem(problem)
            assert str(port) in win.banner.text() and not win.banner.isHidden()
        finally:
            win.close()

        # REAPER's feedback port taken: the bridge runs, the window names the port
        settings = Settings(output_dir=str(tmp_path / "out"), host="reaper", osc_command_port=free_port(),
                            reaper_listen_port=port)
        bridge, problem = start_bridge(settings, client)
        assert bridge is not None and problem == ""
        win = MainWindow(settings, client, bridge=bridge, settings_path=tmp_path / "gui.json")
        try:
            win.show()
            assert wait_for(lambda: f"UDP port {port}" in win.banner.text(), 10)
            assert "REAPER" in win.banner.text() and "File > Settings" in win.banner.text()
        finally:
            win.close()
            bridge.stop()


def test_results_of_a_job_the_window_did_not_start_can_be_opened(window, tmp_path):
    fetched = []
    window.link.download = lambda ref, dest, done, failed, after=None: fetched.append((ref, str(dest)))
    old_job = {"id": "0123456789ab", "state": "done", "created_at": 1.0, "request": {"task_type": "text2music"},
               "results": [{"index": 0, "seed": 5, "url": "/v1/files/r0", "format": "wav"}]}
    window._on_job(old_job)
    assert fetched == []  # listed, not fetched on its own
    window.jobs_panel.table.selectRow(0)
    window.jobs_panel.open_button.click()
    assert fetched and fetched[0][0] == "/v1/files/r0" and fetched[0][1].startswith(str(tmp_path / "out"))


def test_common_controls_need_no_scrolling_at_1280x800(window):
    from PyQt6.QtWidgets import QScrollArea
    window.resize(1280, 800)
    wait_for(lambda: False, 0.3)
    scrolls = window.splitter.findChildren(QScrollArea)
    assert len(scrolls) == 2
    for scroll in scrolls:
        assert not scroll.verticalScrollBar().isVisible() and not scroll.horizontalScrollBar().isVisible()
    prompt = window.prompt_panel
    for widget in (prompt.source, prompt.region_start, prompt.reference, prompt.caption, prompt.duration,
                   prompt.task_buttons["generate"], window.jobs_panel.table, window.results_panel.list):
        assert not widget.visibleRegion().isEmpty(), widget
