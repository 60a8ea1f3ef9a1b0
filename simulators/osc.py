"""An OSC peer on loopback UDP: sends to any port and records every message it receives."""

from __future__ import annotations

import socket
import threading

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer

from simulators import wait_for


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
