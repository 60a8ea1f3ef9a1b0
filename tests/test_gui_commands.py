"""The `gui`, launcher and `screenshot` entry points, and the engine subprocess helper."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from engine.process import EngineProcess
from engine.service.threaded import InProcessEngine
from gui import launcher, screenshot
from gui.settings import Settings
from tests.cli_utils import run_cli
from tests.gui_helpers import PARITY_CHECKPOINTS, StandInPipeline, qt_app, wait_for


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("command", ["gui", "screenshot"])
def test_help_of_each_command_is_printed(command):
    out = run_cli(command, "--help")
    assert out.returncode == 0, out.stderr
    assert "--engine-url" in out.stdout


def test_launcher_options_parse():
    args = _parse(launcher, ["--no-bridge", "--checkpoints", "ckpt", "--host", "ableton", "--token", "t"])
    assert (args.no_bridge, args.checkpoints, args.host, args.token, args.engine_url) == \
        (True, "ckpt", "ableton", "t", None)
    with pytest.raises(SystemExit):
        _parse(launcher, ["--host", "cubase"])


def test_launcher_uses_a_running_engine_or_a_given_url_instead_of_starting_one(tmp_path):
    server = InProcessEngine(tmp_path / "results", pipeline=StandInPipeline()).start()
    try:
        from engine.client import EngineClient
        settings = Settings(engine_url=server.url)
        args = _parse(launcher, [])
        assert launcher.start_engine_if_needed(settings, EngineClient(server.url), args) is None
        named = _parse(launcher, ["--engine-url", "http://127.0.0.1:1"])
        assert launcher.start_engine_if_needed(Settings(engine_url="http://127.0.0.1:1"),
                                               EngineClient("http://127.0.0.1:1"), named) is None
    finally:
        server.stop()


def test_launcher_never_starts_an_engine_for_a_remote_url():
    from engine.client import EngineClient
    settings = Settings(engine_url="http://192.0.2.1:8765")  # TEST-NET: never answers
    client = EngineClient(settings.engine_url, timeout=0.5)
    assert launcher.start_engine_if_needed(settings, client, _parse(launcher, [])) is None


def test_engine_subprocess_command_carries_the_options():
    args = _parse(launcher, ["--dit", "acestep-v15-base", "--lm", "none", "--device", "cpu"])
    process = EngineProcess(checkpoints="ckpt", port=8799, token="t", extra_args=launcher.engine_args(args))
    command = process.command()
    assert command[1:3] == ["-m", "engine.service"]
    for pair in (["--port", "8799"], ["--checkpoints", "ckpt"], ["--token", "t"], ["--dit", "acestep-v15-base"],
                 ["--device", "cpu"]):
        index = command.index(pair[0])
        assert command[index:index + 2] == pair
    assert process.url == "http://127.0.0.1:8799"


def test_bridge_config_comes_from_the_window_settings(tmp_path):
    settings = Settings(engine_url="http://127.0.0.1:9999", host="reaper", osc_command_port=9200,
                        reaper_listen_port=9001, reaper_send_port=8001, midi_in_port="IAC",
                        output_dir=str(tmp_path))
    config = launcher.bridge_config(settings)
    config.validate()
    assert (config.engine_url, config.host, config.osc_port, config.reaper_listen_port, config.reaper_port,
            config.midi_in, config.output_dir) == ("http://127.0.0.1:9999", "reaper", 9200, 9001, 8001, "IAC",
                                                   str(tmp_path))


def test_screenshot_command_writes_a_png_of_the_window(tmp_path):
    server = InProcessEngine(tmp_path / "results", pipeline=StandInPipeline()).start()
    try:
        out = tmp_path / "shot.png"
        assert screenshot.run(_parse(screenshot, [str(out), "--engine-url", server.url, "--size", "1000x700"])) == 0
        from PyQt6.QtGui import QImage
        image = QImage(str(out))
        assert (image.width(), image.height()) == (1000, 700)
    finally:
        server.stop()


def test_screenshot_rejects_bad_sizes_and_names(tmp_path):
    with pytest.raises(SystemExit, match="WIDTHxHEIGHT"):
        screenshot.run(_parse(screenshot, [str(tmp_path / "a.png"), "--size", "big"]))
    assert screenshot.run(_parse(screenshot, [str(tmp_path / "a.jpg")])) == 2


@pytest.mark.slow
def test_engine_subprocess_starts_on_the_tiny_checkpoints_and_stops(tmp_path):
    import shutil

    from engine.checkpoints import TINY_WARNING
    from engine.client import EngineClient
    from engine.commands.tiny import write_tiny_marker
    tiny = tmp_path / "checkpoints"  # the parity folders, marked as make-tiny-checkpoints marks its output
    for name in ("acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B"):
        shutil.copytree(PARITY_CHECKPOINTS / name, tiny / name)
        write_tiny_marker(tiny / name, seed=0)
    process = EngineProcess(checkpoints=tiny, results=tmp_path / "results",
                            log_path=tmp_path / "engine.log").start()
    try:
        process.wait_ready(EngineClient(process.url), timeout_s=180)
        health = EngineClient(process.url).health()
        assert health["status"] == "ok" and health["tiny_weights"] and health["warning"] == TINY_WARNING
        ready = [line for line in process.log_path.read_text().splitlines() if line.startswith("engine: ready")]
        assert ready and TINY_WARNING in ready[0]
        assert "kept in float32" not in process.log_path.read_text()
        first = process.process.pid
        process.restart()  # Engine > Restart: same port, a new process, the log kept
        process.wait_ready(EngineClient(process.url), timeout_s=180)
        assert process.process.pid != first and process.starts == 2
        assert process.log_path.read_text().count("engine: serving") == 2
    finally:
        process.stop()
    assert not process.running()


def test_keyboard_shortcuts_start_the_tasks(tmp_path):
    qt_app()
    from PyQt6.QtCore import Qt
    from PyQt6.QtTest import QTest

    from engine.client import EngineClient
    from gui.main_window import MainWindow
    win = MainWindow(Settings(output_dir=str(tmp_path)), EngineClient("http://127.0.0.1:1", timeout=1),
                     settings_path=tmp_path / "gui.json")
    started: list[str] = []
    win.run_action = started.append  # the shortcut wiring is under test, not the engine
    try:
        win.show()
        win.activateWindow()
        wait_for(lambda: False, 0.2)
        QTest.keyClick(win, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
        QTest.keyClick(win, Qt.Key.Key_5, Qt.KeyboardModifier.ControlModifier)
        QTest.keyClick(win, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        assert wait_for(lambda: len(started) >= 3, 5)
        assert started[:3] == ["repaint", "stems", "generate"]
    finally:
        win.close()


@pytest.mark.slow
def test_launcher_starts_engine_and_bridge_and_stops_the_engine_on_exit(tmp_path):
    import json
    import os
    import signal

    from engine.client import EngineClient, EngineUnavailable
    from engine.process import free_port
    from simulators.osc import OscPeer, free_udp_port
    url = f"http://127.0.0.1:{free_port()}"
    osc_port = free_udp_port()
    (tmp_path / "gui.json").write_text(json.dumps({
        "engine_url": url, "output_dir": str(tmp_path / "out"), "osc_command_port": osc_port,
        "reaper_listen_port": free_udp_port(), "ableton_listen_port": free_udp_port()}))
    env = {**os.environ, "ACE_COMPANION_CONFIG_DIR": str(tmp_path), "QT_QPA_PLATFORM": "offscreen",
           "ACE_COMPANION_CHECKPOINTS": str(PARITY_CHECKPOINTS)}
    launcher_process = subprocess.Popen([sys.executable, "-m", "ace_companion", "--checkpoints",
                                         str(PARITY_CHECKPOINTS)], env=env, cwd=tmp_path,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = EngineClient(url, timeout=2)
    peer = OscPeer()

    def engine_answers():
        assert launcher_process.poll() is None, launcher_process.stdout.read()
        try:
            return client.health()["status"] == "ok"
        except EngineUnavailable:
            return False

    def bridge_answers():  # the launcher's in-process bridge, started next to the window
        assert launcher_process.poll() is None, launcher_process.stdout.read()
        peer.send(osc_port, "/acecomp/ping")
        return wait_for(lambda: bool(peer.all("/acecomp/pong")), 0.2)

    try:
        assert wait_for(engine_answers, 180), "the launcher's engine never answered"
        assert wait_for(bridge_answers, 60), "the launcher's bridge never answered a ping"
        assert (tmp_path / "engine.log").exists()
        launcher_process.send_signal(signal.SIGTERM)
        output, _ = launcher_process.communicate(timeout=60)
    finally:
        peer.close()
        if launcher_process.poll() is None:
            launcher_process.kill()
    assert launcher_process.returncode == 0, output
    assert "starting the engine" in output and "engine stopped" in output
    assert "bridge did not start" not in output and "not available" not in output
    with pytest.raises(EngineUnavailable):
        client.health()
