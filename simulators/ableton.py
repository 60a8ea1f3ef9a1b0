"""Ableton Live as the bridge sees it: AbletonOSC's replies and listeners on loopback UDP, and our
AceCompanion insert server (the Remote Script's) in front of a fake Live set."""

from __future__ import annotations

import threading

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from bridge.ableton.AceCompanion.insert_server import InsertServer
from simulators.osc import osc_bytes


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
