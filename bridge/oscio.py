"""One UDP OSC socket that both receives (dispatching by address) and sends.

Sending from the listening socket matters: AbletonOSC and our REAPER/command peers reply to
the sender's address, so replies come back to the same port. Handler exceptions are logged
and swallowed, so one bad message never stops the server.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Callable

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer

log = logging.getLogger(__name__)

Address = tuple[str, int]
Handler = Callable[..., None]  # handler(sender, address, *args)


class OscArgumentError(ValueError):
    """An OSC message has the wrong number or type of arguments."""


def osc_arg(value: Any) -> Any:
    """Make a value sendable: None -> '', bool -> int, ints beyond 32 bits -> str."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and not -2 ** 31 <= value < 2 ** 31:
        return str(value)
    if isinstance(value, (int, float, str, bytes)):
        return value
    return str(value)


def build_message(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(osc_arg(arg))
    return builder.build().dgram


def float_arg(args: tuple, index: int, name: str) -> float:
    """Argument `index` as a finite float, or an OscArgumentError naming `name`."""
    if len(args) <= index:
        raise OscArgumentError(f"missing argument '{name}'")
    value = args[index]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise OscArgumentError(f"'{name}' must be a number, got {value!r}") from None
        else:
            raise OscArgumentError(f"'{name}' must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise OscArgumentError(f"'{name}' must be a finite number, got {value!r}")
    return value


def int_arg(args: tuple, index: int, name: str) -> int:
    value = float_arg(args, index, name)
    if value != int(value):
        raise OscArgumentError(f"'{name}' must be a whole number, got {value!r}")
    return int(value)


def str_arg(args: tuple, index: int, name: str) -> str:
    if len(args) <= index:
        raise OscArgumentError(f"missing argument '{name}'")
    value = args[index]
    if not isinstance(value, str):
        raise OscArgumentError(f"'{name}' must be a string, got {value!r}")
    return value


class OscEndpoint:
    def __init__(self, host: str, port: int, name: str = "osc"):
        self.name = name
        self.dispatcher = Dispatcher()
        self.dispatcher.set_default_handler(self._unknown, needs_reply_address=True)
        self._unknown_handler: Handler | None = None
        self.server = BlockingOSCUDPServer((host, port), self.dispatcher)
        self._thread: threading.Thread | None = None
        self._send_lock = threading.Lock()

    @property
    def address(self) -> Address:
        host, port = self.server.server_address[:2]
        return host, port

    @property
    def port(self) -> int:
        return self.address[1]

    def map(self, address: str, handler: Handler) -> None:
        def safe(sender, addr, *args):
            try:
                handler(sender, addr, *args)
            except Exception:
                log.exception("%s: handler for %s failed", self.name, addr)
        self.dispatcher.map(address, safe, needs_reply_address=True)

    def on_unknown(self, handler: Handler) -> None:
        self._unknown_handler = handler

    def _unknown(self, sender, address, *args):
        if self._unknown_handler is not None:
            try:
                self._unknown_handler(sender, address, *args)
            except Exception:
                log.exception("%s: unknown-address handler failed", self.name)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"osc-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server.server_close()

    def send(self, target: Address, address: str, *args: Any) -> None:
        try:
            data = build_message(address, *args)
            with self._send_lock:
                self.server.socket.sendto(data, target)
        except OSError as exc:
            log.warning("%s: cannot send %s to %s:%s (%s)", self.name, address, target[0], target[1], exc)
