"""`ace-companion render` error handling: one clear line, exit code 2, no traceback."""

from __future__ import annotations

import json

from engine.commands.render import output_paths
from tests.cli_utils import CliResult, run_cli
from tests.parity_utils import CHECKPOINTS


def _render(*args: str) -> CliResult:
    return run_cli("render", *args)


def test_bad_request_exits_2_with_one_line(tmp_path):
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"caption": "x", "bpm": 5000}))
    proc = _render("--checkpoints", str(CHECKPOINTS), "--request", str(request), "--out", str(tmp_path / "o.wav"))
    assert proc.returncode == 2
    assert "bpm" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.wav").exists()


def test_missing_request_file_and_source_audio(tmp_path):
    proc = _render("--request", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o.wav"))
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"task_type": "cover", "src_audio": "missing.wav"}))
    proc = _render("--request", str(request), "--out", str(tmp_path / "o.wav"))
    assert proc.returncode == 2 and "src_audio" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_checkpoints_folder(tmp_path):
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"caption": "x", "duration": 5}))
    proc = _render("--checkpoints", str(tmp_path / "none"), "--request", str(request),
                   "--out", str(tmp_path / "o.wav"))
    assert proc.returncode == 2
    assert "checkpoints folder not found" in proc.stderr and "Traceback" not in proc.stderr


def test_output_paths_for_batches(tmp_path):
    out = tmp_path / "song.wav"
    assert output_paths(out, 1) == [out]
    assert output_paths(out, 3) == [tmp_path / "song-1.wav", tmp_path / "song-2.wav", tmp_path / "song-3.wav"]
