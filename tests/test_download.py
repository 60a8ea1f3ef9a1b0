"""`ace-companion download`: listing, fast offline failure, and the download logic with a fake hub."""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine import checkpoints as ck
from engine.commands import download

REPO_ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HF_HUB_OFFLINE", None)
    env.update(env_extra or {})
    # the timeout only guards against a hang; it is not a speed assertion
    return subprocess.run([sys.executable, "-m", "ace_companion", "download", *args], capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT, timeout=120)


def _args(root: Path, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    download.add_arguments(parser)
    argv = ["--checkpoints", str(root)]
    for name in overrides.pop("model", []):
        argv += ["--model", name]
    argv += [f"--{flag}" for flag, on in overrides.items() if on]
    return parser.parse_args(argv)


def test_list_shows_every_folder_and_its_state(parity_checkpoints):
    result = _cli("--list", "--checkpoints", str(parity_checkpoints))
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:] if line and not line.startswith(" ")}
    assert set(lines) == set(ck.REGISTRY)
    assert " complete " in lines["acestep-v15-turbo"] and "(core)" in lines["acestep-v15-turbo"]
    assert " missing " in lines["acestep-v15-sft"] and "ACE-Step/acestep-v15-sft" in lines["acestep-v15-sft"]
    assert str(parity_checkpoints) in result.stdout.splitlines()[0]


def test_list_reports_an_incomplete_folder(parity_checkpoints, tmp_path, capsys):
    shutil.copytree(parity_checkpoints / "vae", tmp_path / "vae")
    (tmp_path / "vae" / "config.json").write_text("{")
    assert download.run(_args(tmp_path, list=True)) == 0
    out = capsys.readouterr().out
    assert "incomplete" in out and "problem:" in out and "unreadable config.json" in out


@pytest.mark.parametrize("env,expected", [
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
    ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "cannot reach http://127.0.0.1:9"),
])
def test_no_network_fails_at_once_with_one_line(tmp_path, env, expected):
    result = _cli("--checkpoints", str(tmp_path / "ckpt"), env_extra=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert expected in result.stderr
    assert not (tmp_path / "ckpt" / "acestep-v15-turbo").exists()


def test_unknown_model_is_a_usage_error(tmp_path, capsys):
    assert download.run(_args(tmp_path, model=["acestep-v15-huge"])) == 2
    assert "unknown checkpoint 'acestep-v15-huge'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- fake hub

class FakeHub:
    """Stands in for `snapshot_download`: serves repo trees from local folders, honouring
    `allow_patterns` the way huggingface_hub does (fnmatch on repo-relative paths)."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = repos
        self.calls: list[dict] = []
        self.fail_for: set[str] = set()

    def __call__(self, repo_id, *, allow_patterns, local_dir, **kwargs):
        self.calls.append({"repo_id": repo_id, "allow_patterns": list(allow_patterns),
                           "local_dir": Path(local_dir), **kwargs})
        if repo_id in self.fail_for:
            raise ConnectionError("connection reset by peer\nmore detail")
        source = self.repos[repo_id]
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(relative, p) for p in allow_patterns):
                target = Path(local_dir) / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        return str(local_dir)


@pytest.fixture()
def fake_hub(parity_checkpoints, parity_lm_dir, tmp_path, monkeypatch):
    hub_root = tmp_path / "hub"
    main = hub_root / "main"
    for name in ("acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B"):
        shutil.copytree(parity_checkpoints / name, main / name)
    (main / "acestep-v15-turbo" / "modeling_acestep_v15_turbo.py").write_text("raise SystemExit('never')\n")
    (main / "README.md").write_text("top-level readme\n")
    (main / "config.json").write_text("{}\n")
    base = hub_root / "base"
    shutil.copytree(parity_checkpoints / "acestep-v15-base", base)
    (base / "modeling_acestep_v15_base.py").write_text("raise SystemExit('never')\n")
    lm = hub_root / "lm06"
    shutil.copytree(parity_lm_dir / "checkpoints" / "acestep-5Hz-lm-0.6B", lm)
    hub = FakeHub({ck.MAIN_REPO: main, "ACE-Step/acestep-v15-base": base, "ACE-Step/acestep-5Hz-lm-0.6B": lm})
    monkeypatch.setattr(download, "snapshot_download", hub)
    monkeypatch.setattr(download, "check_hub_reachable", lambda endpoint: None)
    return hub


def test_default_downloads_the_core_set_into_the_root(fake_hub, tmp_path, capsys):
    root = tmp_path / "checkpoints"
    assert download.run(_args(root)) == 0
    assert [c["repo_id"] for c in fake_hub.calls] == [ck.MAIN_REPO] * 3
    assert all(c["local_dir"] == root.resolve() for c in fake_hub.calls)
    assert [c["allow_patterns"][0].split("/")[0] for c in fake_hub.calls] == list(ck.CORE_SET)
    for name in ck.CORE_SET:
        ck.validate_folder(root / name, ck.REGISTRY[name].kind)
    assert not list(root.rglob("*.py"))
    assert not (root / "README.md").exists() and not (root / "config.json").exists()
    assert not (root / "acestep-5Hz-lm-1.7B").exists()
    assert capsys.readouterr().out.count(": ok (") == 3


def test_the_real_snapshot_download_accepts_our_arguments(fake_hub, tmp_path):
    import inspect

    import huggingface_hub

    assert download.run(_args(tmp_path / "checkpoints", model=["acestep-v15-base"])) == 0
    (call,) = fake_hub.calls
    call = {**call, "local_dir": str(call["local_dir"])}
    inspect.signature(huggingface_hub.snapshot_download).bind(**call)  # TypeError if a name is wrong
    assert call["endpoint"] == download.hub_endpoint()


def test_sub_model_repos_go_into_their_own_folder(fake_hub, tmp_path):
    root = tmp_path / "checkpoints"
    assert download.run(_args(root, model=["acestep-v15-base", "0.6B"])) == 0
    assert [(c["repo_id"], c["local_dir"]) for c in fake_hub.calls] == [
        ("ACE-Step/acestep-v15-base", root.resolve() / "acestep-v15-base"),
        ("ACE-Step/acestep-5Hz-lm-0.6B", root.resolve() / "acestep-5Hz-lm-0.6B"),
    ]
    ck.validate_folder(root / "acestep-v15-base", "dit")
    ck.validate_folder(root / "acestep-5Hz-lm-0.6B", "lm")
    assert sorted(p.name for p in (root / "acestep-5Hz-lm-0.6B").iterdir()) == sorted(
        p.name for p in fake_hub.repos["ACE-Step/acestep-5Hz-lm-0.6B"].iterdir())
    assert not list(root.rglob("*.py"))


def test_complete_folders_are_skipped(fake_hub, tmp_path, capsys):
    root = tmp_path / "checkpoints"
    assert download.run(_args(root)) == 0
    fake_hub.calls.clear()
    assert download.run(_args(root)) == 0
    assert fake_hub.calls == []
    assert capsys.readouterr().out.count("already complete") == 3


def test_a_damaged_folder_is_fetched_again(fake_hub, tmp_path):
    root = tmp_path / "checkpoints"
    assert download.run(_args(root, model=["vae"])) == 0
    weights = root / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    fake_hub.calls.clear()
    assert download.run(_args(root, model=["vae"])) == 0
    assert len(fake_hub.calls) == 1
    ck.validate_folder(root / "vae", "vae")


def test_hub_error_is_one_line_and_the_rest_continues(fake_hub, tmp_path, capsys):
    fake_hub.fail_for.add("ACE-Step/acestep-v15-base")
    root = tmp_path / "checkpoints"
    assert download.run(_args(root, model=["acestep-v15-base", "vae"])) == 1
    err = capsys.readouterr().err
    assert "acestep-v15-base: failed (ConnectionError: connection reset by peer); run the command again" in err
    assert "more detail" not in err
    ck.validate_folder(root / "vae", "vae")


def test_incomplete_after_download_is_reported(fake_hub, tmp_path, capsys):
    (fake_hub.repos[ck.MAIN_REPO] / "vae" / "config.json").unlink()
    assert download.run(_args(tmp_path / "checkpoints", model=["vae"])) == 1
    assert "vae: downloaded but incomplete" in capsys.readouterr().err


def test_not_enough_disk_space(fake_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download.shutil, "disk_usage",
                        lambda path: SimpleNamespace(total=10**12, used=10**12 - 10, free=10))
    assert download.run(_args(tmp_path / "checkpoints")) == 1
    assert "not enough disk space" in capsys.readouterr().err
    assert fake_hub.calls == []


def test_probe_honours_offline_flag_and_endpoint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    with pytest.raises(download.HubUnreachable, match="HF_HUB_OFFLINE"):
        download.check_hub_reachable("http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert download.hub_endpoint() == "http://127.0.0.1:9"
    with pytest.raises(download.HubUnreachable, match="cannot reach http://127.0.0.1:9"):
        download.check_hub_reachable(download.hub_endpoint())


def _make_tiny_copy(parity_checkpoints: Path, root: Path, names=("acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B")):
    """Parity folders marked the way `make-tiny-checkpoints` marks its output."""
    from engine.commands.tiny import write_tiny_marker
    for name in names:
        shutil.copytree(parity_checkpoints / name, root / name)
        write_tiny_marker(root / name, seed=0)


def test_list_says_tiny_folders_are_random_weights(parity_checkpoints, tmp_path, capsys):
    _make_tiny_copy(parity_checkpoints, tmp_path)
    assert download.run(_args(tmp_path, list=True)) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith(" ")}
    assert " tiny " in lines["acestep-v15-turbo"] and " complete " not in lines["acestep-v15-turbo"]
    assert ck.TINY_WARNING in out


def test_download_replaces_tiny_folders_with_the_real_weights(fake_hub, parity_checkpoints, tmp_path, capsys):
    root = tmp_path / "checkpoints"
    _make_tiny_copy(parity_checkpoints, root)
    assert download.run(_args(root)) == 0
    out = capsys.readouterr().out
    assert out.count("replacing them with the real weights") == 3 and "already complete" not in out
    assert [c["repo_id"] for c in fake_hub.calls] == [ck.MAIN_REPO] * 3
    for name in ("acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B"):
        assert not ck.is_tiny(root / name)
    assert not any(entry["tiny"] for entry in ck.describe_root(root))
