"""Clip insertion for Ableton Live over OSC (UDP 127.0.0.1:11010), run inside Live.

AbletonOSC cannot import audio files (its `create_audio_clip` PRs are unmerged), so this small
Remote Script adds exactly that, next to AbletonOSC:

  /acecomp/live/ping                                   -> /acecomp/live/pong <live major version>
  /acecomp/live/insert <req> <track> <path> <beats> <new_track 0|1> <name>
        arrangement clip at <beats> (Track.create_audio_clip: Live 12.x; confirmed on 12.4.1)
  /acecomp/live/insert_session <req> <track> <slot> <path>
        Session clip in an empty slot (ClipSlot.create_audio_clip: Live 12.0.5+)
  replies: /acecomp/live/inserted <req> ok|error <message>

Only files under the allowed folders are accepted (default ~/ACE-Companion; override with the
environment variable ACE_COMPANION_OUTPUT or a file `allowed_roots.txt` next to this script,
one folder per line). Clips are set to warping off: the bridge already cut them at song tempo.
Plain Python with no imports from Live, so it also runs (and is tested) outside Live.
"""

import os
import socket
import struct

AUDIO_EXTENSIONS = (".wav", ".aif", ".aiff", ".flac")
DEFAULT_PORT = 11010


# ------------------------------------------------------------------ tiny OSC codec
def _pad(data):
    return data + b"\0" * (4 - len(data) % 4)


def _read_string(data, pos):
    end = data.index(b"\0", pos)
    text = data[pos:end].decode("utf-8", "replace")
    return text, (end // 4 + 1) * 4


def decode_message(data):
    """OSC message bytes -> (address, [args]); supports i f d h s T F. Raises ValueError."""
    address, pos = _read_string(data, 0)
    if not address.startswith("/"):
        raise ValueError("not an OSC message")
    if pos >= len(data):
        return address, []
    tags, pos = _read_string(data, pos)
    if not tags.startswith(","):
        raise ValueError("missing OSC type tags")
    args = []
    for tag in tags[1:]:
        if tag == "i":
            args.append(struct.unpack(">i", data[pos:pos + 4])[0]); pos += 4
        elif tag == "f":
            args.append(struct.unpack(">f", data[pos:pos + 4])[0]); pos += 4
        elif tag == "d":
            args.append(struct.unpack(">d", data[pos:pos + 8])[0]); pos += 8
        elif tag == "h":
            args.append(struct.unpack(">q", data[pos:pos + 8])[0]); pos += 8
        elif tag == "s":
            text, pos = _read_string(data, pos)
            args.append(text)
        elif tag in "TF":
            args.append(tag == "T")
        else:
            raise ValueError("unsupported OSC type tag %r" % tag)
    return address, args


def encode_message(address, args):
    tags, payload = ",", b""
    for arg in args:
        if isinstance(arg, bool):
            arg = int(arg)
        if isinstance(arg, int):
            tags += "i"; payload += struct.pack(">i", arg)
        elif isinstance(arg, float):
            tags += "f"; payload += struct.pack(">f", arg)
        else:
            tags += "s"; payload += _pad(str(arg).encode("utf-8"))
    return _pad(address.encode("utf-8")) + _pad(tags.encode("ascii")) + payload


# ------------------------------------------------------------------ path safety
def load_allowed_roots(script_dir=None):
    roots = []
    env = os.environ.get("ACE_COMPANION_OUTPUT", "")
    roots.extend(p for p in env.split(os.pathsep) if p.strip())
    if script_dir:
        listing = os.path.join(script_dir, "allowed_roots.txt")
        if os.path.exists(listing):
            with open(listing, encoding="utf-8") as fh:
                roots.extend(line.strip() for line in fh if line.strip() and not line.startswith("#"))
    if not roots:
        roots.append(os.path.join(os.path.expanduser("~"), "ACE-Companion"))
    return [os.path.realpath(os.path.expanduser(r)) for r in roots]


def path_problem(path, roots):
    """None when `path` is an existing audio file under one of `roots`, else the reason."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return "path must be absolute"
    real = os.path.realpath(path)
    if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
        return "path is outside the allowed folders (%s)" % ", ".join(roots)
    if not real.lower().endswith(AUDIO_EXTENSIONS):
        return "not an audio file (%s)" % ", ".join(AUDIO_EXTENSIONS)
    if not os.path.isfile(real):
        return "file does not exist"
    return None


# ------------------------------------------------------------------ the server
class InsertServer(object):
    def __init__(self, song_getter, allowed_roots, port=DEFAULT_PORT, host="127.0.0.1", log=None,
                 live_version=0):
        self.song_getter = song_getter
        self.allowed_roots = list(allowed_roots)
        self.log = log or (lambda text: None)
        self.live_version = live_version
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)

    @property
    def port(self):
        return self.sock.getsockname()[1]

    def close(self):
        self.sock.close()

    def poll(self):
        """Handle every waiting datagram (call this from Live's ~100 ms tick)."""
        while True:
            try:
                data, sender = self.sock.recvfrom(65536)
            except (BlockingIOError, socket.timeout):
                return
            except OSError:
                return
            try:
                address, args = decode_message(data)
            except (ValueError, struct.error, IndexError) as exc:
                self.log("AceCompanion: malformed OSC from %s: %s" % (sender, exc))
                continue
            for reply in self.handle(address, args):
                try:
                    self.sock.sendto(encode_message(reply[0], reply[1:]), sender)
                except OSError as exc:
                    self.log("AceCompanion: cannot reply to %s: %s" % (sender, exc))

    def handle(self, address, args):
        if address == "/acecomp/live/ping":
            return [("/acecomp/live/pong", self.live_version)]
        if address in ("/acecomp/live/insert", "/acecomp/live/insert_session"):
            req = str(args[0]) if args else ""
            try:
                if address == "/acecomp/live/insert":
                    self._insert_arrangement(args)
                else:
                    self._insert_session(args)
            except Exception as exc:  # report every failure to the bridge; Live keeps running
                self.log("AceCompanion: insert failed: %s" % exc)
                return [("/acecomp/live/inserted", req, "error", str(exc))]
            return [("/acecomp/live/inserted", req, "ok", "")]
        return [("/acecomp/live/error", "unknown address %s" % address)]

    def _checked_path(self, path):
        problem = path_problem(path, self.allowed_roots)
        if problem:
            raise ValueError("%s: %s" % (path, problem))
        return os.path.realpath(path)

    def _track(self, song, index):
        tracks = list(song.tracks)
        if index < 0:
            return song.view.selected_track
        if index >= len(tracks):
            raise ValueError("track %d does not exist (the set has %d tracks)" % (index, len(tracks)))
        return tracks[index]

    def _insert_arrangement(self, args):
        if len(args) < 6:
            raise ValueError("insert needs: request id, track, path, start beats, new track, name")
        _, track_index, path, beats, new_track, name = args[:6]
        path = self._checked_path(path)
        beats = float(beats)
        if not 0 <= beats <= 1576800:
            raise ValueError("start %s beats is outside 0-1576800" % beats)
        song = self.song_getter()
        if int(new_track):
            at = len(list(song.tracks)) if int(track_index) < 0 else int(track_index) + 1
            song.create_audio_track(at)
            track = list(song.tracks)[at]
            if name:
                track.name = str(name)
        else:
            track = self._track(song, int(track_index))
        if not getattr(track, "has_audio_input", True):
            raise ValueError("audio clips can only be created on audio tracks (track '%s' is MIDI)" % track.name)
        if not hasattr(track, "create_audio_clip"):
            raise ValueError("this Live version has no Track.create_audio_clip (needs Live 12); "
                             "drag the file from the ACE Companion window instead")
        clip = track.create_audio_clip(path, beats)
        _unwarp(clip)

    def _insert_session(self, args):
        if len(args) < 4:
            raise ValueError("insert_session needs: request id, track, slot, path")
        _, track_index, slot_index, path = args[:4]
        path = self._checked_path(path)
        track = self._track(self.song_getter(), int(track_index))
        slots = list(track.clip_slots)
        if not 0 <= int(slot_index) < len(slots):
            raise ValueError("clip slot %s does not exist" % slot_index)
        slot = slots[int(slot_index)]
        if slot.has_clip:
            raise ValueError("clip slot %s is not empty" % slot_index)
        if not hasattr(slot, "create_audio_clip"):
            raise ValueError("this Live version has no ClipSlot.create_audio_clip (needs Live 12.0.5+)")
        _unwarp(slot.create_audio_clip(path))


def _unwarp(clip):
    if clip is not None and hasattr(clip, "warping"):
        clip.warping = False
