"""`ace-companion download`: fetch the published ACE-Step 1.5 checkpoints.

Files come from the Hugging Face Hub with `huggingface_hub.snapshot_download`, restricted
to the files each folder needs (never the `.py` files the repos also hold). Interrupted
downloads resume where they stopped when the command is run again. Before anything is
fetched the hub endpoint is probed with a short timeout, so a machine without network
fails at once with one line instead of hanging.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
from huggingface_hub import snapshot_download

from engine.checkpoints import (
    CORE_SET,
    REGISTRY,
    TINY_WARNING,
    CheckpointSpec,
    describe_root,
    folder_size,
    is_tiny,
    resolve_root,
    spec_for,
    validate_folder,
)
from engine.types import CheckpointError

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
ETAG_TIMEOUT_S = 10.0


class HubUnreachable(Exception):
    """The hub cannot be used right now (offline mode, no network, bad endpoint)."""


def add_arguments(parser) -> None:
    parser.description = (
        "Download ACE-Step 1.5 checkpoints from the Hugging Face Hub into the checkpoints folder "
        "(--checkpoints DIR, else $ACE_COMPANION_CHECKPOINTS, else ./checkpoints). With no option it "
        "fetches the core set: acestep-v15-turbo, vae and Qwen3-Embedding-0.6B (about 6.3 GB). "
        "Re-running resumes interrupted downloads and skips complete folders. Honours HF_ENDPOINT, "
        "HF_HUB_OFFLINE and HF_TOKEN.")
    parser.add_argument("--checkpoints", metavar="DIR", default=None,
                        help="checkpoints root folder (default: $ACE_COMPANION_CHECKPOINTS or ./checkpoints)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--model", metavar="NAME", action="append", default=None,
                        help="download this folder (repeatable); a name from --list, or an LM size "
                             "0.6B / 1.7B / 4B")
    choice.add_argument("--all", action="store_true",
                        help="download every folder in the registry (about 104 GB, of which the three XL DiTs "
                             "are 60 GB)")
    choice.add_argument("--list", action="store_true",
                        help="list the known folders and what is on disk, then exit")


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _offline_mode() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def check_hub_reachable(endpoint: str) -> None:
    """Raise `HubUnreachable` unless `endpoint` answers an HTTP request within a few seconds."""
    if _offline_mode():
        raise HubUnreachable("HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it and try again")
    try:
        httpx.head(endpoint, timeout=PROBE_TIMEOUT, follow_redirects=False)
    except httpx.InvalidURL as exc:
        raise HubUnreachable(f"HF_ENDPOINT '{endpoint}' is not a valid URL ({exc})") from None
    except (httpx.HTTPError, OSError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise HubUnreachable(f"cannot reach {endpoint} ({reason}); check the network connection, "
                             f"proxy settings or HF_ENDPOINT") from None


def _human(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def print_list(root: Path) -> None:
    print(f"checkpoints folder: {root}")
    print(f"{'name':<30} {'kind':<13} {'status':<11} {'on disk':>9} {'download':>9}  source")
    for entry in describe_root(root):
        status = "complete" if entry["complete"] else ("incomplete" if entry["present"] else "missing")
        if entry.get("tiny"):
            status = "tiny"
        core = " (core)" if entry["name"] in CORE_SET else ""
        print(f"{entry['name']:<30} {entry['kind']:<13} {status:<11} {_human(entry['size']):>9} "
              f"{_human(entry['approx_size']):>9}  {entry['repo_id']}{core}")
        if entry["problem"]:
            print(f"    problem: {entry['problem']}")
        elif entry.get("tiny"):
            print(f"    {TINY_WARNING} (from make-tiny-checkpoints); `ace-companion download` replaces them")


def download_folder(spec: CheckpointSpec, root: Path, endpoint: str) -> Path:
    """Fetch one folder into `root/<name>` and validate it. Resumes partial files."""
    # The main repo holds several folders: download into the root so `<name>/...` lands in place.
    local_dir = root if spec.repo_subfolder else root / spec.name
    local_dir.mkdir(parents=True, exist_ok=True)
    snapshot_download(
        repo_id=spec.repo_id,
        allow_patterns=spec.allow_patterns(),
        local_dir=str(local_dir),
        endpoint=endpoint,
        etag_timeout=ETAG_TIMEOUT_S,
    )
    return validate_folder(root / spec.name, spec.kind)


def _check_disk_space(root: Path, specs: list[CheckpointSpec]) -> None:
    needed = sum(max(0, spec.approx_size - folder_size(root / spec.name)) for spec in specs)
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise CheckpointError(f"{root}: not enough disk space ({_human(free)} free, about {_human(needed)} "
                              f"needed); free some space or pass --checkpoints DIR on a larger disk")


def _selected(args) -> list[CheckpointSpec]:
    if args.all:
        return list(REGISTRY.values())
    if args.model:
        specs = []
        for name in args.model:
            spec = spec_for(name)
            if spec not in specs:
                specs.append(spec)
        return specs
    return [REGISTRY[name] for name in CORE_SET]


def run(args) -> int:
    root = resolve_root(args.checkpoints)
    if args.list:
        print_list(root)
        return 0
    try:
        specs = _selected(args)
    except CheckpointError as exc:
        print(f"download: {exc}", file=sys.stderr)
        return 2

    todo = []
    for spec in specs:
        if is_tiny(root / spec.name):
            print(f"{spec.name}: {TINY_WARNING} in {root / spec.name}; replacing them with the real weights")
            todo.append(spec)
            continue
        try:
            validate_folder(root / spec.name, spec.kind)
            print(f"{spec.name}: already complete in {root / spec.name}")
        except CheckpointError:
            todo.append(spec)
    if not todo:
        return 0

    endpoint = hub_endpoint()
    try:
        check_hub_reachable(endpoint)
        _check_disk_space(root, todo)
    except (HubUnreachable, CheckpointError) as exc:
        print(f"download: {exc}", file=sys.stderr)
        return 1

    failed = 0
    for number, spec in enumerate(todo, 1):
        print(f"[{number}/{len(todo)}] {spec.name} from {spec.repo_id} (about {_human(spec.approx_size)}) "
              f"-> {root / spec.name}", flush=True)
        try:
            if is_tiny(root / spec.name):
                shutil.rmtree(root / spec.name)  # random files must not pass for cached real ones
            folder = download_folder(spec, root, endpoint)
        except CheckpointError as exc:
            print(f"download: {spec.name}: downloaded but incomplete: {exc}", file=sys.stderr)
            failed += 1
            continue
        except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types; report one line
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"download: {spec.name}: failed ({type(exc).__name__}: {reason}); run the command "
                  f"again to resume", file=sys.stderr)
            failed += 1
            continue
        print(f"{spec.name}: ok ({_human(folder_size(folder))} in {folder})", flush=True)
    if failed:
        print(f"download: {failed} of {len(todo)} folder(s) failed", file=sys.stderr)
        return 1
    return 0
