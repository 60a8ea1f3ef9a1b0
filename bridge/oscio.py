"""One UDP OSC socket that both receives (dispatching by address) and sends.

Sending from the listening socket matters: AbletonOSC and our REAPER/command peers reply to
the sender's address, so replies come back to the same port. Handler exceptions are logged
and swallowed, so one bad message never stops the server.

Nothing a sender puts in a packet can stall the socket:
- bundles are dispatched at once; their timetags are ignored (python-osc's dispatcher would
  sleep until a timetag in the future, holding the only receiving thread);
- addresses are matched exactly (a mapped `*` stands for one whole path segment), never by
  turning the incoming address into a regular expression; an incoming address that is itself a
  pattern (`*?[]{}`) matches nothing, and under `/acecomp/` it is refused.
"""

from __future__ import annotations

import logging
import math
import socketserver
import threading
from collections.abc import Callable
from typing import Any

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

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


PATTERN_CHARS = frozenset("*?[]{}")
MAX_BUNDLE_DEPTH = 8


def packet_messages(data: bytes) -> list[OscMessage]:
    """The messages of a datagram in order, bundles flattened, timetags ignored."""
    if OscBundle.dgram_is_bundle(data):
        return _flatten(OscBundle(data), 0)
    if OscMessage.dgram_is_message(data):
        return [OscMessage(data)]
    raise ValueError("not an OSC message or bundle")


def _flatten(bundle: OscBundle, depth: int) -> list[OscMessage]:
    if depth >= MAX_BUNDLE_DEPTH:
        raise ValueError(f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
    messages: list[OscMessage] = []
    for content in bundle:
        messages.extend(_flatten(content, depth + 1) if isinstance(content, OscBundle) else [content])
    return messages


def is_pattern(address: str) -> bool:
    return any(char in PATTERN_CHARS for char in address)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.endpoint._receive(self.request[0], self.client_address)


class _UDPServer(socketserver.UDPServer):
    max_packet_size = 65536

    def __init__(self, address: Address, endpoint: OscEndpoint):
        self.endpoint = endpoint
        super().__init__(address, _Handler)


class OscEndpoint:
    def __init__(self, host: str, port: int, name: str = "osc"):
        self.name = name
        self._exact: dict[str, Handler] = {}
        self._segment_patterns: list[tuple[tuple[str, ...], Handler]] = []
        self._unknown_handler: Handler | None = None
        self._refused_handler: Handler | None = None
        self.server = _UDPServer((host, port), self)
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
        """Call `handler(sender, address, *args)` for `address`; a `*` segment matches any one segment."""
        if "*" in address:
            self._segment_patterns.append((tuple(address.split("/")), handler))
        else:
            self._exact[address] = handler

    def on_unknown(self, handler: Handler) -> None:
        self._unknown_handler = handler

    def on_refused(self, handler: Handler) -> None:
        """`handler(sender, address, reason)` for a pattern address sent to our `/acecomp/` namespace."""
        self._refused_handler = handler

    def handler_for(self, address: str) -> Handler | None:
        handler = self._exact.get(address)
        if handler is not None or is_pattern(address):
            return handler if handler is not None and not is_pattern(address) else None
        parts = address.split("/")
        for pattern, candidate in self._segment_patterns:
            if len(pattern) == len(parts) and all(p == "*" or p == a for p, a in zip(pattern, parts)):
                return candidate
        return None

    def _receive(self, data: bytes, sender: Address) -> None:
        try:
            messages = packet_messages(data)
        except Exception as exc:  # malformed datagrams are dropped, the socket keeps serving
            log.debug("%s: dropped a malformed packet from %s: %s", self.name, sender, exc)
            return
        for message in messages:
            self._dispatch(sender, message.address, tuple(message.params))

    def _dispatch(self, sender: Address, address: str, args: tuple) -> None:
        if is_pattern(address):
            if address.startswith("/acecomp/") and self._refused_handler is not None:
                self._call(self._refused_handler, sender, address,
                           ("OSC address patterns are not accepted under /acecomp/: send the exact address",))
            return
        handler = self.handler_for(address)
        if handler is None:
            if self._unknown_handler is not None:
                self._call(self._unknown_handler, sender, address, args)
            return
        self._call(handler, sender, address, args)

    def _call(self, handler: Handler, sender: Address, address: str, args: tuple) -> None:
        try:
            handler(sender, address, *args)
        except Exception:
            log.exception("%s: handler for %s failed", self.name, address)

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
