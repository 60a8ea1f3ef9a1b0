"""On-disk state of the engine: jobs, uploads and rendered results.

Layout under the results folder (default `./results`):

    results/<job_id>/item<index>-seed<seed>.wav   rendered audio (48 kHz 32-bit float; 24-bit .flac when asked)
    results/<job_id>/item<index>-seed<seed>.json  sidecar: request, seed, models, timings, LM plan
    results/.jobs/<job_id>.json                   one small file per job, written atomically
    results/.uploads/<file_id>/<name>             uploaded audio, with <file_id>.json (name, size)

Everything is plain JSON and audio, so a results folder can be copied, browsed and
re-opened by a later engine. Torch-free.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

JOBS_DIR = ".jobs"
UPLOADS_DIR = ".uploads"
_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    return uuid.uuid4().hex


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value or ""))


def replace_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_name)` next to `path`, then rename over it: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """`durable`: fsync before the rename (job files, once per state change); sidecars and
    upload notes skip it, a crash there loses nothing a client cannot recreate."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, ensure_ascii=False, default=_json_default)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())

    replace_atomically(path, write)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # torch tensors in an LM plan, without importing torch
        return value.tolist()
    return str(value)


class Store:
    """Paths and file I/O for jobs, uploads and results under one folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.jobs_dir = self.root / JOBS_DIR
        self.uploads_dir = self.root / UPLOADS_DIR
        for folder in (self.root, self.jobs_dir, self.uploads_dir):
            folder.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ jobs
    def save_job(self, record: dict) -> None:
        write_json_atomic(self.jobs_dir / f"{record['id']}.json", record)

    def load_jobs(self) -> tuple[list[dict], list[str]]:
        """All persisted job records (oldest first) and a list of problems with unreadable files."""
        records, problems = [], []
        for path in sorted(self.jobs_dir.glob("*.json")):
            try:
                with open(path, encoding="utf-8") as fh:
                    record = json.load(fh)
                if not isinstance(record, dict) or not is_valid_id(str(record.get("id", ""))):
                    raise ValueError("not a job record")
            except (OSError, ValueError) as exc:
                problems.append(f"{path.name}: {exc}")
                continue
            records.append(record)
        records.sort(key=lambda r: (r.get("created_at") or 0.0, r.get("seq") or 0))
        return records, problems

    # ------------------------------------------------------------ uploads
    def new_upload_path(self, file_id: str, name: str) -> Path:
        """Where an upload is stored: its own folder, keeping the original name (and extension)."""
        folder = self.uploads_dir / file_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder / safe_file_name(name)

    def remove_upload(self, file_id: str) -> None:
        shutil.rmtree(self.uploads_dir / file_id, ignore_errors=True)
        try:
            os.remove(self.uploads_dir / f"{file_id}.json")
        except OSError:
            pass

    def save_upload_meta(self, file_id: str, meta: dict) -> None:
        """`meta` must hold `file`, the stored file name inside the upload's folder."""
        write_json_atomic(self.uploads_dir / f"{file_id}.json", meta, durable=False)

    def upload_ids(self) -> list[str]:
        return [p.stem for p in self.uploads_dir.glob("*.json") if is_valid_id(p.stem)]

    def upload_meta(self, file_id: str) -> dict | None:
        if not is_valid_id(file_id):
            return None
        try:
            with open(self.uploads_dir / f"{file_id}.json", encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or not (self.uploads_dir / file_id / str(meta.get("file", ""))).is_file():
            return None
        return meta

    def upload_path(self, file_id: str) -> Path | None:
        meta = self.upload_meta(file_id)
        return None if meta is None else self.uploads_dir / file_id / meta["file"]

    # ------------------------------------------------------------ results
    def write_result(self, job_id: str, index: int, seed: int, audio: Any, sample_rate: int,
                     audio_format: str, sidecar: dict) -> Path:
        """Write one rendered item and its JSON sidecar; returns the audio path."""
        import soundfile  # local: only the worker thread writes audio

        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        ext = "flac" if audio_format == "flac" else "wav"
        path = folder / f"item{index}-seed{seed}.{ext}"
        samples = to_channels_last(audio)
        # WAV keeps the model's float samples exactly; FLAC has no float format, so 24-bit.
        replace_atomically(path, lambda tmp: soundfile.write(
            tmp, samples, int(sample_rate), subtype="PCM_24" if ext == "flac" else "FLOAT",
            format="FLAC" if ext == "flac" else "WAV"))
        write_json_atomic(path.with_suffix(".json"), {**sidecar, "file": path.name}, durable=False)
        return path


def safe_file_name(name: str) -> str:
    """A file name without folders or odd characters; keeps the extension."""
    base = os.path.basename(str(name).replace("\\", "/")) or "upload"
    cleaned = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .") or "upload"
    return cleaned[-120:]


def to_channels_last(audio: Any) -> np.ndarray:
    """[channels, samples] array or tensor -> float32 numpy [samples, channels], clipped to +-1."""
    if hasattr(audio, "detach"):
        audio = audio.detach().float().cpu().numpy()
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"expected audio of shape [channels, samples], got {array.shape}")
    return np.clip(array.T, -1.0, 1.0)
