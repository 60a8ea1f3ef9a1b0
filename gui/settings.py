"""Persistent settings of the control window, stored as one JSON file in the user config dir."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR_ENV = "ACE_COMPANION_CONFIG_DIR"
DEFAULT_ENGINE_URL = "http://127.0.0.1:8001"
OLD_DEFAULT_ENGINE_URL = "http://127.0.0.1:8765"  # the engine's port before it moved to upstream's 8001


def default_config_dir() -> Path:
    """`$ACE_COMPANION_CONFIG_DIR`, else the platform's per-user config folder."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "ace-companion"


def default_output_dir() -> Path:
    """The bridge's clip folder (~/ACE-Companion/clips): one folder for the window and the bridge,
    and inside ~/ACE-Companion, where Ableton's insert script accepts files."""
    from bridge.config import default_output_dir as bridge_default
    return Path(bridge_default())


@dataclass
class Settings:
    engine_url: str = DEFAULT_ENGINE_URL
    engine_token: str = ""
    checkpoints: str = ""  # for the engine the launcher starts; "" = the engine's default
    host: str = "auto"              # which DAW the bridge talks to: auto | reaper | ableton | midi
    osc_command_port: int = 9110    # the bridge's /acecomp/... command port
    reaper_listen_port: int = 9000  # REAPER's OSC feedback arrives here
    reaper_send_port: int = 8000    # REAPER's OSC control port
    ableton_send_port: int = 11000  # AbletonOSC listens here
    ableton_listen_port: int = 11001  # AbletonOSC replies here
    midi_in_port: str = ""          # MIDI clock / trigger input; "" = none
    output_dir: str = str(default_output_dir())
    audio_device: str = ""        # sounddevice output name; "" = the system default
    window_geometry: str = ""     # hex of QWidget.saveGeometry()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Known keys with the right type are taken; anything else keeps its default."""
        settings = cls()
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            default = getattr(settings, f.name)
            if isinstance(default, bool) or not isinstance(value, type(default)):
                continue
            setattr(settings, f.name, value)
        return settings


def default_settings_path() -> Path:
    return default_config_dir() / "gui.json"


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read settings; a missing or unreadable file gives the defaults (never raises)."""
    path = Path(path) if path is not None else default_settings_path()
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return Settings()
    if not isinstance(data, dict):
        return Settings()
    if data.get("engine_url") == OLD_DEFAULT_ENGINE_URL:
        data["engine_url"] = DEFAULT_ENGINE_URL  # saved before the default port changed
    return Settings.from_dict(data)


def save_settings(settings: Settings, path: str | os.PathLike | None = None) -> Path:
    """Write settings atomically (temp file + rename) and return the path."""
    path = Path(path) if path is not None else default_settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gui-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(settings.to_dict(), fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
