"""ACE Companion Remote Script for Ableton Live 12: audio-clip insertion for the bridge.

Install: copy this `AceCompanion` folder into `<User Library>/Remote Scripts/`, restart Live,
and pick "AceCompanion" as a Control Surface (Settings > Link, Tempo & MIDI), in a slot next to
AbletonOSC. See insert_server.py for the OSC messages it answers on UDP 127.0.0.1:11010.
"""

import os

from .insert_server import DEFAULT_PORT, InsertServer, load_allowed_roots

try:  # Live 11/12
    from ableton.v2.control_surface import ControlSurface
except ImportError:
    try:  # older framework
        from _Framework.ControlSurface import ControlSurface
    except ImportError:  # outside Live (tests import insert_server through this package)
        ControlSurface = object


def create_instance(c_instance):
    return AceCompanion(c_instance)


class AceCompanion(ControlSurface):
    def __init__(self, c_instance):
        ControlSurface.__init__(self, c_instance)
        try:
            import Live
            version = Live.Application.get_application().get_major_version()
        except Exception:
            version = 0
        roots = load_allowed_roots(os.path.dirname(os.path.abspath(__file__)))
        self._server = None
        try:
            self._server = InsertServer(self._song, roots, port=DEFAULT_PORT, log=self.log_message,
                                        live_version=version)
            self.log_message("AceCompanion: listening on 127.0.0.1:%d, allowed: %s" % (DEFAULT_PORT, roots))
        except OSError as exc:
            self.log_message("AceCompanion: cannot open UDP port %d: %s" % (DEFAULT_PORT, exc))
        self.schedule_message(1, self._tick)

    def _song(self):
        song = self.song
        return song() if callable(song) else song

    def _tick(self):
        if self._server is not None:
            self._server.poll()
        self.schedule_message(1, self._tick)

    def disconnect(self):
        if self._server is not None:
            self._server.close()
            self._server = None
        ControlSurface.disconnect(self)
