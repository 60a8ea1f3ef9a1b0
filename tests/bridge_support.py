"""Test doubles for the bridge: an engine pipeline that answers with recognisable audio, and
simulated REAPER / AbletonOSC peers speaking the real addresses over loopback UDP."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import numpy as np
import soundfile as sf
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer

from bridge.ableton.AceCompanion.insert_server import InsertServer
from bridge.reaper.adapter import format_kv, parse_kv
from engine.types import GenerationOutput, ProgressEvent
from tests.service_support import LiveServer, wait_for

SR = 48000
MARK_HZ = 1000.0  # the "new" audio the echo pipeline writes into repaint regions


def timecode(start_s: float, frames: int, sample_rate: int) -> np.ndarray:
    """Project audio whose value tells the time: a slow sine per channel (phase-shifted), so any
    excerpt can be matched against the project at its exact position."""
    t = start_s + np.arange(frames) / sample_rate
    left = 0.5 * np.sin(2 * np.pi * 3.7 * t)
    right = 0.5 * np.cos(2 * np.pi * 2.3 * t)
    return np.stack([left, right]).astype(np.float32)


def mark(frames: int, sample_rate: int = SR) -> np.ndarray:
    t = np.arange(frames) / sample_rate
    tone = 0.25 * np.sin(2 * np.pi * MARK_HZ * t).astype(np.float32)
    return np.stack([tone, tone])


class EchoPipeline:
    """Pipeline contract without a model. repaint: the source with the repaint span replaced by
    a 1 kHz tone (outpainting past the end like the engine); extract: half the source;
    cover: the source negated; text2music: the tone for `duration`."""

    def __init__(self, steps: int = 3, step_s: float = 0.0):
        self.steps = steps
        self.step_s = step_s
        self.requests = []

    def info(self) -> dict:
        return {"dit": "echo", "lm": None, "device": "cpu", "dtype": "float32", "checkpoints": ""}

    def load_dit(self, name):
        pass

    def load_lm(self, name):
        pass

    def generate(self, request, progress=None, cancel=None, dump=False):
        self.requests.append(request)
        for step in range(self.steps):
            if cancel and cancel():
                from engine.types import Cancelled
                raise Cancelled("cancelled")
            if progress:
                progress(ProgressEvent("diffusion", step + 1, self.steps, ""))
            time.sleep(self.step_s)
        if request.task_type == "text2music":
            audio = mark(int(round(request.duration * SR)))
        else:
            data, sr = sf.read(request.src_audio, dtype="float32", always_2d=True)
            assert sr == SR, "the bridge sends context audio at 48 kHz"
            src = data.T.copy()
            if request.task_type == "repaint":
                a = int(round(request.repainting_start * SR))
                b = int(round(request.repainting_end * SR))
                if b > src.shape[1]:
                    src = np.concatenate([src, np.zeros((2, b - src.shape[1]), np.float32)], axis=1)
                src[:, a:b] = mark(b - a)
                audio = src
            elif request.task_type == "extract":
                audio = 0.5 * src
            else:
                audio = -src
        seeds = request.item_seeds() or [1234]
        return GenerationOutput(audio=[audio.astype(np.float32)], sample_rate=SR, seeds=seeds,
                                request=request.to_dict(), timings={"total": 0.0})


@contextlib.contextmanager
def echo_engine(tmp_path, pipeline=None):
    from engine.service.app import create_app
    from engine.service.core import EngineService
    pipeline = pipeline or EchoPipeline()
    service = EngineService(pipeline, tmp_path / "engine-results", log=lambda line: None)
    service.start()
    try:
        with LiveServer(create_app(service)) as server:
            server.pipeline = pipeline
            server.service = service
            yield server
    finally:
        service.stop()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def osc_bytes(address, *args) -> bytes:
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


class OscPeer:
    """A UDP OSC socket that records everything it receives (address, args)."""

    def __init__(self, port: int = 0, on_message=None):
        self.received: list[tuple[str, tuple]] = []
        self.on_message = on_message

        def handle(address, *args):
            self.received.append((address, args))
            if self.on_message is not None:
                self.on_message(address, args)
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(handle)
        self.server = BlockingOSCUDPServer(("127.0.0.1", port), dispatcher)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def send(self, port: int, address: str, *args) -> None:
        self.server.socket.sendto(osc_bytes(address, *args), ("127.0.0.1", port))

    def send_raw(self, port: int, data: bytes) -> None:
        self.server.socket.sendto(data, ("127.0.0.1", port))

    def wait_for(self, address: str, timeout: float = 30.0, predicate=None):
        def find():
            for addr, args in list(self.received):
                if addr == address and (predicate is None or predicate(args)):
                    return (args,)
            return None
        return wait_for(find, timeout=timeout)[0]

    def all(self, address: str) -> list[tuple]:
        return [args for addr, args in list(self.received) if addr == address]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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


# ---------------------------------------------------------------- Ableton
class FakeClip:
    def __init__(self, path, start):
        self.file_path, self.start_time, self.warping = path, start, True


class FakeTrack:
    def __init__(self, name, audio=True):
        self.name, self.has_audio_input, self.arrangement_clips = name, audio, []

    def create_audio_clip(self, path, start):
        clip = FakeClip(path, start)
        self.arrangement_clips.append(clip)
        return clip


class FakeView:
    def __init__(self, song):
        self.song = song

    @property
    def selected_track(self):
        return self.song.tracks[self.song.selected]


class FakeSong:
    def __init__(self):
        self.tracks = [FakeTrack("Drums"), FakeTrack("Synth", audio=False), FakeTrack("Mix")]
        self.selected = 2
        self.view = FakeView(self)

    def create_audio_track(self, index):
        self.tracks.insert(index, FakeTrack(f"{index + 1}-Audio"))


class SimulatedAbletonOSC:
    """AbletonOSC's behaviour on loopback: listens on `port`, replies to the sender's IP at
    `reply_port` (whatever port the request came from), listeners push on change; plus our
    AceCompanion insert server on `insert_port` in front of a fake Live set."""

    def __init__(self, reply_port: int, port: int = 0, insert_port: int = 0, allowed_root: str = "/nonexistent"):
        self.reply_port = reply_port
        self.song_props = {"tempo": 96.0, "signature_numerator": 3, "signature_denominator": 4,
                           "loop_start": 6.0, "loop_length": 24.0, "root_note": 9, "scale_name": "Minor",
                           "is_playing": 0, "current_song_time": 0.0, "beat": 0}
        self.selected_track = 2
        self.listening: set[str] = set()
        self.received: list[str] = []
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(self._handle, needs_reply_address=True)
        self.server = BlockingOSCUDPServer(("127.0.0.1", port), dispatcher)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.song = FakeSong()
        self.inserter = InsertServer(lambda: self.song, [allowed_root], port=insert_port, live_version=12)
        self._stop = threading.Event()
        self.insert_thread = threading.Thread(target=self._poll_insert, daemon=True)
        self.insert_thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def insert_port(self) -> int:
        return self.inserter.port

    def _poll_insert(self):
        while not self._stop.wait(0.02):
            self.inserter.poll()

    def _reply(self, sender, address, *args):
        self.server.socket.sendto(osc_bytes(address, *args), (sender[0], self.reply_port))

    def _handle(self, sender, address, *args):
        self.received.append(address)
        parts = address.split("/")
        if address == "/live/test":
            self._reply(sender, "/live/test", "ok")
        elif address.startswith("/live/song/get/"):
            self._reply(sender, address, self.song_props[parts[-1]])
        elif address.startswith("/live/song/start_listen/"):
            self.listening.add(parts[-1])
            self._reply(sender, f"/live/song/get/{parts[-1]}", self.song_props[parts[-1]])
            self.last_sender = sender
        elif address == "/live/view/get/selected_track" or address == "/live/view/start_listen/selected_track":
            self._reply(sender, "/live/view/get/selected_track", self.selected_track)

    def set(self, prop, value):
        """Change a song property in 'Live'; pushes it to the listener like AbletonOSC."""
        self.song_props[prop] = value
        if prop in self.listening:
            self._reply(self.last_sender, f"/live/song/get/{prop}", value)

    def close(self):
        self._stop.set()
        self.insert_thread.join(2)
        self.inserter.close()
        self.server.shutdown()
        self.server.server_close()


def wait_until(predicate, timeout: float = 30.0):
    return wait_for(predicate, timeout=timeout)


def settle(seconds: float = 0.1) -> None:
    time.sleep(seconds)
