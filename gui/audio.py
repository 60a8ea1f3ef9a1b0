"""Audition through sounddevice: output device list, play/stop, and A/B switching at the same position."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import soundfile as sf
from PyQt6.QtCore import QObject, pyqtSignal

from gui.tasks import TaskRunner, describe_error


def load_sounddevice() -> tuple[Any | None, str]:
    """(the sounddevice module, "") or (None, a hint saying why audition is off)."""
    try:
        import sounddevice
    except OSError as exc:  # the module imports PortAudio at import time
        return None, f"Audition is off: {exc} (install PortAudio, e.g. `apt install libportaudio2`)."
    except ImportError:
        return None, "Audition is off: the Python package 'sounddevice' is not installed."
    return sounddevice, ""


def output_devices() -> tuple[list[str], str]:
    """Names of output devices and a hint ("" when at least one exists)."""
    sd, hint = load_sounddevice()
    if sd is None:
        return [], hint
    try:
        devices = sd.query_devices()
    except Exception as exc:  # PortAudio errors have no common base class we can import safely
        return [], f"Audition is off: could not list audio devices ({exc})."
    names = [d["name"] for d in devices if d.get("max_output_channels", 0) > 0]
    if not names:
        return [], "Audition is off: no audio output device was found. Drag results into the DAW instead."
    return names, ""


class AudioPlayer(QObject):
    """Plays one file at a time; `switch_to` keeps the playhead when flipping between A and B."""

    started = pyqtSignal(object)  # the key given to play()
    stopped = pyqtSignal()
    error = pyqtSignal(str)

    def __init__(self, runner: TaskRunner, parent: QObject | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(parent)
        self.runner = runner
        self.clock = clock
        self.devices, self.hint = output_devices()
        self.device: str | None = None
        self.current: Any = None
        self._started_at = 0.0
        self._offset_s = 0.0

    @property
    def available(self) -> bool:
        return bool(self.devices)

    def set_device(self, name: str | None) -> None:
        self.device = name if name in self.devices else None

    def position_s(self) -> float:
        if self.current is None:
            return 0.0
        return self._offset_s + self.clock() - self._started_at

    def play(self, path: str, key: Any = None, start_s: float = 0.0) -> None:
        if not self.available:
            self.error.emit(self.hint)
            return
        device = self.device

        def work():
            sd, _ = load_sounddevice()
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            first = min(len(audio), max(0, int(start_s * rate)))
            sd.stop()
            sd.play(np.ascontiguousarray(audio[first:]), rate, device=device)
            return len(audio) / float(rate)

        def done(_duration: float) -> None:
            self.current = key
            self._offset_s = start_s
            self._started_at = self.clock()
            self.started.emit(key)

        self.runner.run(work, done, lambda exc: self.error.emit(describe_error(exc)))

    def switch_to(self, path: str, key: Any) -> None:
        """Play another file from the current position (A/B comparison)."""
        self.play(path, key, start_s=self.position_s() if self.current is not None else 0.0)

    def stop(self) -> None:
        if self.current is None:
            return
        self.current = None
        if self.available:
            sd, _ = load_sounddevice()
            self.runner.run(sd.stop)
        self.stopped.emit()
