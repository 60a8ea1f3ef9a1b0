"""`ace-companion` with no command: start the engine (if needed) and the bridge, open the window.

The engine is started as a subprocess (engine.process.EngineProcess) unless one already answers
/health at the configured URL or --engine-url is given; the window restarts it if it dies. Whatever
the launcher started is stopped when the window closes.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from urllib.parse import urlparse

from engine.process import EngineProcess
from gui.app import add_connection_arguments, apply_connection_arguments, make_application, make_client, quit_on_signals
from gui.bridge_link import explain_port_clash, port_in_use
from gui.settings import Settings, default_config_dir, load_settings
from gui.tasks import describe_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--checkpoints", metavar="DIR", default=None,
                        help="checkpoints folder for the engine we start (default: the engine's default)")
    parser.add_argument("--dit", default=None, help="DiT to load at start (default: the engine's default)")
    parser.add_argument("--lm", default=None, help="LM planner to load at start: none, 0.6B, 1.7B or 4B")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="engine device (default: auto)")
    parser.add_argument("--no-bridge", action="store_true", help="do not start the DAW bridge")
    parser.add_argument("--host", choices=("auto", "reaper", "ableton", "midi"), default=None,
                        help="which DAW the bridge talks to (default: the saved setting, auto)")


def engine_args(args: argparse.Namespace) -> list[str]:
    extra: list[str] = []
    for name in ("dit", "lm", "device"):
        value = getattr(args, name, None)
        if value:
            extra += [f"--{name}", value]
    return extra


def _loopback_address(url: str) -> tuple[str, int] | None:
    """(host, port) when `url` points at this machine, else None (we never start remote engines)."""
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    return (host if host != "localhost" else "127.0.0.1", parsed.port or 80) if local else None


def start_engine_if_needed(settings: Settings, client, args: argparse.Namespace) -> EngineProcess | None:
    """Start an engine subprocess unless one answers at the URL or the user named a URL."""
    if args.engine_url:
        return None
    try:
        client.health()
        print(f"ace-companion: using the engine already running at {settings.engine_url}", file=sys.stderr)
        return None
    except Exception:  # nothing answers there: start our own
        pass
    address = _loopback_address(settings.engine_url)
    if address is None:
        print(f"ace-companion: the engine at {settings.engine_url} does not answer and is not on this machine; "
              "the window will keep trying to connect.", file=sys.stderr)
        return None
    host, port = address
    process = EngineProcess(checkpoints=args.checkpoints, host=host, port=port,
                            token=settings.engine_token or None, extra_args=engine_args(args),
                            log_path=default_config_dir() / "engine.log")
    process.start()
    print(f"ace-companion: starting the engine on {process.url} (log: {process.log_path})", file=sys.stderr)
    return process


def bridge_config(settings: Settings):
    """The bridge's configuration from the window's settings (one output folder for both)."""
    from bridge.config import BridgeConfig
    return BridgeConfig(engine_url=settings.engine_url, token=settings.engine_token or None, host=settings.host,
                        osc_port=settings.osc_command_port, reaper_listen_port=settings.reaper_listen_port,
                        reaper_port=settings.reaper_send_port, ableton_port=settings.ableton_send_port,
                        ableton_listen_port=settings.ableton_listen_port,
                        midi_in=settings.midi_in_port or None, output_dir=settings.output_dir)


def start_bridge(settings: Settings, client):
    """Start the DAW bridge in-process; returns (bridge or None, a message when it could not start)."""
    try:
        from bridge.app import BridgeApp
    except ImportError as exc:
        return None, f"DAW bridge not available ({exc}); drag results into the DAW instead."
    bridge = None
    try:
        bridge = BridgeApp(bridge_config(settings), client)
        bridge.start()
    except Exception as exc:  # a bad setting or a port in use: the window still opens, without the bridge
        if bridge is not None:
            bridge.stop()
        if isinstance(exc, OSError) and port_in_use(str(exc)):
            return None, explain_port_clash("commands", settings)
        return None, f"DAW bridge did not start: {describe_error(exc)}"
    return bridge, ""


def run(args: argparse.Namespace) -> int:
    settings = apply_connection_arguments(load_settings(args.settings), args)
    if args.host:
        settings.host = args.host
    app = make_application()
    quit_on_signals(app)
    client = make_client(settings)
    engine = start_engine_if_needed(settings, client, args)
    bridge, bridge_problem = (None, "") if args.no_bridge else start_bridge(settings, client)
    if bridge_problem:
        print(f"ace-companion: {bridge_problem}", file=sys.stderr)
    try:
        from gui.main_window import MainWindow
        window = MainWindow(settings, client, bridge=bridge, settings_path=args.settings)
        if engine is not None:
            window.watch_engine_process(engine)
        if bridge_problem:
            window.show_bridge_problem(bridge_problem)
        window.show()
        return app.exec()
    finally:
        if bridge is not None:
            bridge.stop()
        if engine is not None:
            engine.stop()
            print("ace-companion: engine stopped", file=sys.stderr)
