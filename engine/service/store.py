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

import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Room kept free beyond a job's own files, so that job records can still be written afterwards.
RESERVE_BYTES = 16 * 1024 * 1024
_MB = 1024 * 1024
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

    def load_jobs(self, check: Callable[[dict], str | None] | None = None) -> tuple[list[dict], list[str]]:
        """All persisted job records (oldest first), and one line per file that was quarantined.

        A file that is not JSON, not a job record, or fails `check` (which returns a problem or
        None) is moved to `.jobs/quarantine/` so that the engine starts and the file can be looked at.
        """
        records, problems = [], []
        for path in sorted(self.jobs_dir.glob("*.json")):
            try:
                with open(path, encoding="utf-8") as fh:
                    record = json.load(fh)
                if not isinstance(record, dict) or not is_valid_id(str(record.get("id", ""))):
                    raise ValueError("not a job record")
                if record["id"] != path.stem:
                    raise ValueError(f"its id {record['id']} differs from the file name")
                problem = check(record) if check is not None else None
                if problem:
                    raise ValueError(problem)
            except (OSError, ValueError) as exc:
                problems.append(f"{path.name}: {exc}; {self._quarantine(path)}")
                continue
            records.append(record)
        records.sort(key=lambda r: (float(r.get("created_at") or 0.0), int(r.get("seq") or 0)))
        return records, problems

    def _quarantine(self, path: Path) -> str:
        folder = self.jobs_dir / "quarantine"
        try:
            folder.mkdir(exist_ok=True)
            target = folder / path.name
            os.replace(path, target)
            return f"moved to {target}"
        except OSError as exc:
            return f"left in place ({exc.strerror or exc})"

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
    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return None

    def writable(self) -> bool:
        return os.access(self.root, os.W_OK)

    def disk_status(self) -> dict:
        free = self.free_bytes()
        return {"path": str(self.root), "free_mb": None if free is None else round(free / _MB, 1),
                "writable": self.writable()}

    @staticmethod
    def result_bytes(audio: Any, audio_format: str) -> int:
        """About how many bytes one rendered item takes on disk (32-bit WAV; FLAC is smaller)."""
        shape = getattr(audio, "shape", None) or np.shape(audio)
        samples = int(np.prod(shape)) if shape else 0
        return samples * (4 if audio_format != "flac" else 3) + 64 * 1024

    def check_room(self, needed: int) -> None:
        """Raise OSError(ENOSPC) before writing when `needed` bytes (plus a reserve) do not fit."""
        free = self.free_bytes()
        if free is not None and free < needed + RESERVE_BYTES:
            raise OSError(errno.ENOSPC, f"{needed / _MB:.0f} MB needed")

    def write_problem(self, exc: BaseException) -> str:
        """The musician-facing reason a write under the results folder failed."""
        code = getattr(exc, "errno", None)
        free = self.free_bytes()
        shown_free = "unknown" if free is None else f"{free / _MB:.0f}"
        if code in (errno.EROFS, errno.EACCES, errno.EPERM) or not self.writable():
            return f"results folder is read-only: cannot write to {self.root}"
        if code in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < RESERVE_BYTES) \
                or type(exc).__name__ == "LibsndfileError":
            return f"results folder full: {shown_free} MB free at {self.root}"
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return f"could not write the result to {self.root}: {reason}"

    def remove_results(self, job_id: str, written: list[Path]) -> None:
        """Remove the files of a result that could not be completed (never another job's)."""
        for path in written:
            try:
                os.remove(path)
            except OSError:
                pass
        try:
            (self.root / job_id).rmdir()  # only when empty
        except OSError:
            pass

    def write_result(self, job_id: str, index: int, seed: int, audio: Any, sample_rate: int,
                     audio_format: str, sidecar: dict, written: list[Path] | None = None) -> Path:
        """Write one rendered item and its JSON sidecar; returns the audio path.

        Each file appears whole or not at all; `written` collects the finished paths."""
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
        if written is not None:
            written.append(path)
        write_json_atomic(path.with_suffix(".json"), {**sidecar, "file": path.name}, durable=False)
        if written is not None:
            written.append(path.with_suffix(".json"))
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
