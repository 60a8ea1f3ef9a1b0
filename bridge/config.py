"""Bridge settings with sane defaults (every field has a CLI flag in bridge/cli.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from bridge.actions import BASE_DIT, INSERT_MODES, SNAP_MODES
from engine.client import DEFAULT_URL

__all__ = ["BridgeConfig", "HOSTS", "INSERT_MODES", "RENDER_SOURCES", "SNAP_MODES", "default_output_dir"]

HOSTS = ("auto", "reaper", "ableton", "midi", "none")
RENDER_SOURCES = ("master", "track")


def default_output_dir() -> str:
    return os.path.join(os.path.expanduser("~"), "ACE-Companion", "clips")


@dataclass
class BridgeConfig:
    engine_url: str = DEFAULT_URL
    token: str | None = None
    host: str = "auto"
    # OSC command namespace (/acecomp/...): where the bridge listens, and where replies go
    osc_host: str = "127.0.0.1"
    osc_port: int = 9110
    reply_port: int | None = None  # None = reply to the sender's port
    # REAPER: feedback from REAPER's OSC "device" arrives here; control goes to reaper_port
    reaper_listen_port: int = 9000
    reaper_host: str = "127.0.0.1"
    reaper_port: int = 8000
    reaper_web_url: str | None = None  # e.g. http://127.0.0.1:8080 for BEATPOS (meter)
    reaper_mailbox: str | None = None  # folder shared with ace_companion.lua
    render_source: str = "master"  # what REAPER renders as source audio: master mix or the selected track
    reaper_wake_action: str | None = None  # command id of ace_companion_wake.lua, run over OSC per command
    # Ableton: AbletonOSC on 11000, replies on 11001; our Remote Script on 11010
    live_host: str = "127.0.0.1"
    ableton_port: int = 11000
    ableton_listen_port: int = 11001
    ableton_insert_port: int = 11010
    # MIDI
    midi_in: str | None = None
    midi_virtual: bool = False
    midi_mappings: list[str] = field(default_factory=list)
    # Clips
    output_dir: str = field(default_factory=default_output_dir)
    project: str | None = None  # overrides the host's project name in file names
    sample_rate: int = 44100  # used when the host does not say
    sample_format: str = "pcm24"
    source_file: str | None = None  # project mix from time 0 (hosts that cannot render)
    source_offset_s: float = 0.0  # project time of the source file's first sample
    source_cache: bool = True  # reuse the uploaded source while the project/file is unchanged
    snap: str = "nearest"
    insert_mode: str = "replace"
    fade_ms: float = 10.0
    min_context_s: float = 10.0
    max_context_s: float = 240.0
    continue_bars: float | None = None  # None = as many bars as the region
    stems: tuple[str, ...] = ("drums", "bass", "vocals")
    # extract runs on a base DiT only (the engine refuses turbo); None = whatever the engine has loaded
    extract_dit: str | None = BASE_DIT
    request_defaults: dict[str, Any] = field(default_factory=dict)  # GenerationRequest fields
    job_timeout_s: float = 1800.0
    render_timeout_s: float = 120.0
    insert_timeout_s: float = 15.0
    work_dir: str | None = None  # temporary context/result files; default <output_dir>/.work

    def validate(self) -> None:
        if self.host not in HOSTS:
            raise ValueError(f"host {self.host!r} is not one of {', '.join(HOSTS)}")
        if self.insert_mode not in INSERT_MODES:
            raise ValueError(f"insert mode {self.insert_mode!r} is not one of {', '.join(INSERT_MODES)}")
        if self.render_source not in RENDER_SOURCES:
            raise ValueError(f"render source {self.render_source!r} is not one of {', '.join(RENDER_SOURCES)}")
        if self.snap not in SNAP_MODES:
            raise ValueError(f"snap {self.snap!r} is not one of {', '.join(SNAP_MODES)}")
        for name in ("osc_port", "reaper_listen_port", "reaper_port", "ableton_port", "ableton_listen_port",
                     "ableton_insert_port"):
            value = getattr(self, name)
            if not 0 <= int(value) <= 65535:
                raise ValueError(f"{name} {value} is not a UDP port")
        if not 8000 <= self.sample_rate <= 384000:
            raise ValueError(f"sample rate {self.sample_rate} is outside 8000-384000 Hz")
        if not 0 < self.min_context_s <= self.max_context_s:
            raise ValueError("min context must be positive and not above max context")

    @property
    def work_folder(self) -> str:
        return self.work_dir or os.path.join(self.output_dir, ".work")
