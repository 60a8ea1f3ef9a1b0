"""First run: tiny weights are named as such, a dropped upload is one log line, no display is one line."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine import checkpoints as ck
from engine.service.app import create_app
from engine.service.core import EngineService
from engine.service.threaded import InProcessEngine
from simulators import wait_for
from simulators.pipelines import StandInPipeline

ROOT = Path(__file__).resolve().parents[1]


class _TinyInfo(StandInPipeline):
    def __init__(self, root: Path):
        super().__init__(steps=1)
        self.root = root

    def info(self) -> dict:
        return {**super().info(), "checkpoints": str(self.root)}


@pytest.fixture
def tiny_root(parity_checkpoints, tmp_path) -> Path:
    from engine.commands.tiny import write_tiny_marker
    root = tmp_path / "checkpoints"
    for name in ("acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B"):
        shutil.copytree(parity_checkpoints / name, root / name)
        write_tiny_marker(root / name, seed=0)
    return root


def test_health_says_tiny_random_weights(tiny_root, tmp_path, parity_checkpoints):
    from tests.service_support import api_client
    for root, tiny in ((tiny_root, True), (parity_checkpoints, False)):
        service = EngineService(_TinyInfo(root), tmp_path / f"results-{tiny}", log=lambda line: None)
        with api_client(create_app(service)) as client:
            health = client.get("/health").json()
        assert health["tiny_weights"] is tiny
        assert health["warning"] == (ck.TINY_WARNING if tiny else None)


@pytest.mark.parametrize("route, field", [("/v1/jobs", "src_audio"), ("/v1/files", "file")])
def test_a_client_dropping_an_upload_leaves_one_log_line(tmp_path, caplog, route, field):
    lines: list[str] = []
    engine = InProcessEngine(tmp_path / "results", StandInPipeline(steps=1), log=lines.append)
    with engine as server, caplog.at_level(logging.ERROR):
        boundary = "xyz"
        head = (f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ACE-Companion: 1\r\n"
                f"Content-Type: multipart/form-data; "
                f"boundary={boundary}\r\nContent-Length: 1000000\r\n\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"a.wav\"\r\n"
                f"Content-Type: audio/wav\r\n\r\n").encode() + b"\0" * 5000
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head)
        wait_for(lambda: any("disconnected" in line for line in lines), timeout=20)
        assert httpx.get(f"{server.url}/health").status_code == 200  # still serving
    assert not [r for r in caplog.records if "Traceback" in r.getMessage() or r.exc_info]
    assert sum("disconnected" in line for line in lines) == 1


def test_no_display_is_one_line_and_names_the_headless_commands():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-m", "ace_companion"], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=120)
    if sys.platform.startswith("linux"):
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "ace-companion engine" in lines[0] and "ace-companion bridge" in lines[0]
        assert "DISPLAY" in lines[0]


def test_display_check_rules():
    from ace_companion.cli import display_problem
    assert display_problem({}, "linux")
    assert display_problem({"DISPLAY": ":0"}, "linux") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert display_problem({}, "darwin") is None and display_problem({}, "win32") is None


def test_dependencies_are_bounded_and_a_headless_install_has_no_qt():
    import re
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~ ]", dep)[0].lower(): dep for dep in project["dependencies"]}
    for name in ("transformers", "tokenizers", "diffusers", "huggingface_hub"):
        assert "<" in names[name], f"{name} needs an upper bound so pip does not backtrack"
    assert not {"pyqt6", "sounddevice", "lupa"} & set(names)
    extras = project["optional-dependencies"]
    assert any(dep.startswith("PyQt6") for dep in extras["gui"])
    assert any(dep.startswith("lupa") for dep in extras["test"])
    assert '".[gui,test]"' in (ROOT / ".ci" / "run").read_text()


def test_bridge_logs_http_requests_only_at_debug():
    from bridge.cli import quiet_http_logs
    quiet_http_logs("info")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    quiet_http_logs("debug")
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    quiet_http_logs("info")


def test_window_and_bridge_share_one_clip_folder_and_a_standalone_bridge_names_no_window():
    from bridge.config import BridgeConfig
    from gui.settings import Settings
    assert Settings().output_dir == BridgeConfig().output_dir
    for path in (ROOT / "bridge").rglob("*.py"):
        assert "from the window" not in path.read_text(encoding="utf-8"), path


def test_loading_the_vae_prints_no_float32_cast_warning(parity_checkpoints, capfd):
    import torch

    from engine.models.vae import VAE
    VAE.from_folder(parity_checkpoints / "vae", dtype=torch.float32)
    captured = capfd.readouterr()
    assert "kept in float32" not in captured.err + captured.out
