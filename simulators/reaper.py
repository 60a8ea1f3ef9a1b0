"""REAPER as the bridge sees it: OSC feedback to the bridge's REAPER port, and ace_companion.lua's
side of the mailbox (state.txt, render, insert), with project audio that tells the time."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import soundfile as sf

from bridge.reaper.adapter import format_kv, parse_kv
from simulators.osc import OscPeer


def timecode(start_s: float, frames: int, sample_rate: int) -> np.ndarray:
    """Project audio whose value tells the time: a slow sine per channel (phase-shifted), so any
    excerpt can be matched against the project at its exact position."""
    t = start_s + np.arange(frames) / sample_rate
    left = 0.5 * np.sin(2 * np.pi * 3.7 * t)
    right = 0.5 * np.cos(2 * np.pi * 2.3 * t)
    return np.stack([left, right]).astype(np.float32)


WAKE_ACTION = "_RSacecompanionwake"


class SimulatedReaper:
    """REAPER as the bridge sees it: OSC feedback from the default pattern file to the bridge's
    REAPER port, and ace_companion.lua's side of the mailbox (state.txt, render, insert).

    Like the script, it looks for commands every `poll_s` (0.1 s), and at once when the bridge
    runs the wake action over OSC (`/action/_RS...` to `osc.port`). The project's change count
    goes up with every insert and `edit()`; a render asked `unchanged_since` the current count
    answers `unchanged=1` without rendering."""

    def __init__(self, mailbox: str, bridge_port: int | None = None, sample_rate: int = 44100,
                 poll_s: float = 0.1):
        self.mailbox = mailbox
        self.bridge_port = bridge_port
        self.sample_rate = sample_rate
        self.poll_s = poll_s
        self.osc = OscPeer(on_message=self._on_osc)
        self.change_count = 1
        self.state: dict = {"version": 1, "project_name": "Demo Song", "sample_rate": sample_rate, "track": 1,
                            "track_name": "Keys", "play_state": 0, "key": "A minor",
                            "change_count": self.change_count}
        self.markers: list[str] = []
        self.inserted: list[dict] = []
        self.renders: list[dict] = []
        self.wakes = 0
        self.busy_s: list[tuple[str, str, float]] = []  # (command, path, seconds the "DAW" spent on it)
        self.render_mode = "ok"  # ok | truncated | silent (no answer: REAPER gone)
        self._stop = threading.Event()
        self._commands = threading.Lock()
        os.makedirs(mailbox, exist_ok=True)
        self.thread = threading.Thread(target=self._script_loop, daemon=True)
        self.thread.start()

    def _on_osc(self, address, args) -> None:
        if address == f"/action/{WAKE_ACTION}":
            self.wakes += 1
            self.handle_commands()

    def edit(self) -> None:
        """The user changed something in the project."""
        self.change_count += 1
        self.state["change_count"] = self.change_count
        self.write_state()

    # OSC feedback, as REAPER sends it
    def send(self, address, *args):
        self.osc.send(self.bridge_port, address, *args)

    def set_tempo(self, bpm: float, num: int, den: int) -> None:
        self.send("/tempo/raw", float(bpm))
        self.state.update(tempo=bpm, meter=f"{num}/{den}")
        self.markers = [f"0 {bpm} {num} {den}"]
        self.write_state()

    def set_tempo_map(self, markers: list[tuple[float, float, int, int]]) -> None:
        """(time_s, bpm, num, den) markers, as ace_companion.lua reports them."""
        self.send("/tempo/raw", float(markers[0][1]))
        self.state.update(tempo=markers[0][1], meter=f"{markers[0][2]}/{markers[0][3]}")
        self.markers = [f"{t!r} {bpm} {num} {den}" for t, bpm, num, den in markers]
        self.write_state()

    def select(self, start_s: float, end_s: float) -> None:
        self.send("/loop/start/time", float(start_s))
        self.send("/loop/end/time", float(end_s))
        self.state.update(sel_start=f"{start_s:.9f}", sel_end=f"{end_s:.9f}")
        self.write_state()

    def clear_selection(self) -> None:
        """REAPER's "Remove time selection": the loop points (linked) and the selection go to 0."""
        self.send("/loop/start/time", 0.0)
        self.send("/loop/end/time", 0.0)
        self.state.update(sel_start=f"{0.0:.9f}", sel_end=f"{0.0:.9f}")
        self.write_state()

    def write_state(self) -> None:
        text = format_kv(self.state) + "".join(f"marker={m}\n" for m in self.markers)
        tmp = os.path.join(self.mailbox, f"state.txt.{threading.get_ident()}.tmp")
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, os.path.join(self.mailbox, "state.txt"))

    # the script side
    def _script_loop(self) -> None:
        last_state = 0.0
        while not self._stop.wait(self.poll_s):
            if time.monotonic() - last_state > 1.0 and "sel_start" in self.state:  # heartbeat, as the script
                self.write_state()
                last_state = time.monotonic()
            self.handle_commands()

    def handle_commands(self) -> None:
        with self._commands:
            if self.render_mode == "silent":
                return
            for name in sorted(os.listdir(self.mailbox)):
                if not (name.startswith("cmd-") and name.endswith(".txt")):
                    continue
                path = os.path.join(self.mailbox, name)
                with open(path) as fh:
                    cmd = parse_kv(fh.read())
                os.remove(path)
                started = time.perf_counter()
                reply = getattr(self, "_" + cmd["command"])(cmd)
                self.busy_s.append((cmd["command"], cmd.get("path", ""), time.perf_counter() - started))
                with open(os.path.join(self.mailbox, f"cmd-{cmd['id']}.done.tmp"), "w") as fh:
                    fh.write(reply)
                os.replace(os.path.join(self.mailbox, f"cmd-{cmd['id']}.done.tmp"),
                           os.path.join(self.mailbox, f"cmd-{cmd['id']}.done"))

    def _render(self, cmd) -> str:
        start, end = float(cmd["start"]), float(cmd["end"])
        if cmd.get("unchanged_since") == str(self.change_count):
            return f"ok=1\nunchanged=1\nchange_count={self.change_count}\n"
        rate = int(cmd.get("rate") or self.sample_rate)  # REAPER renders at the asked rate
        self.renders.append({"start": start, "end": end, "source": cmd.get("source"), "rate": rate})
        a = int(round(start * rate))
        frames = int(round(end * rate)) - a
        audio = timecode(a / rate, frames, rate)
        if self.render_mode == "truncated":
            audio = audio[:, : frames // 3]
        sf.write(cmd["path"], audio.T, rate, subtype="PCM_24")
        return f"ok=1\npath={cmd['path']}\nchange_count={self.change_count}\n"

    def _insert(self, cmd) -> str:
        self.inserted.append({"path": cmd["path"], "position": float(cmd["position"]), "track": int(cmd["track"]),
                              "new_track": cmd["new_track"] == "1", "track_name": cmd.get("track_name", ""),
                              "replace": cmd["replace"] == "1", "group": cmd.get("group", "")})
        self.change_count += 1  # a new item: the project changed
        self.state["change_count"] = self.change_count
        return f"ok=1\npath={cmd['path']}\n"

    def _insert_named(self, cmd) -> str:  # the script's jam insert: on the track called track_name
        return self._insert(cmd)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.osc.close()
