"""The REAPER ReaScript under test: a Lua interpreter (lupa) with tests/reaper_mock.lua loaded."""

from __future__ import annotations

import os
from pathlib import Path

import lupa

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bridge" / "reaper" / "ace_companion.lua"
MOCK = Path(__file__).with_name("reaper_mock.lua")


def mock_reaper(mailbox: Path):
    """(lua, mock): the mock REAPER API with the script's mailbox set; run `start_script(lua)` next
    (tests may first add to the mock, e.g. a MIDI take API)."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().py_makedirs = lambda path: os.makedirs(path, exist_ok=True)
    lua.globals().py_listdir = lambda path: lua.table_from(sorted(os.listdir(path)) if os.path.isdir(path) else [])
    lua.execute(MOCK.read_text())
    mock = lua.globals().mock
    mock.ext = lua.table_from({"ace_companion": lua.table_from({"mailbox": str(mailbox)})})
    return lua, mock


def start_script(lua) -> None:
    """Run ace_companion.lua once (its loop() defers itself, as in REAPER)."""
    lua.execute(SCRIPT.read_text())
