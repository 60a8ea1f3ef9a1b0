"""Creating the QApplication (name, dark theme) and the engine client from settings, for all entry points."""

from __future__ import annotations

import signal
import sys

from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QApplication

from gui.settings import Settings
from gui.theme import apply_dark_theme


def make_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(list(argv if argv is not None else sys.argv[:1]))
    app.setApplicationName("ACE Companion")
    app.setOrganizationName("ACE Companion")
    apply_dark_theme(app)
    return app


def quit_on_signals(app: QApplication) -> None:
    """Ctrl-C and SIGTERM close the window normally, so whatever we started is stopped too.

    Python only runs signal handlers between bytecodes; the idle timer gives it that chance
    while Qt's event loop (C++) is running.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: app.closeAllWindows())
    timer = QTimer(app)
    timer.setInterval(250)
    timer.timeout.connect(lambda: None)
    timer.start()
    app._signal_timer = timer  # keep it alive with the application


def make_client(settings: Settings):
    from engine.client import EngineClient
    # 10 s per network operation: long enough for a loaded engine, short enough that a vanished
    # machine shows the disconnect banner quickly. Event streams wait without a read limit.
    return EngineClient(settings.engine_url, token=settings.engine_token or None, timeout=10.0)


def add_connection_arguments(parser) -> None:
    """--engine-url, --token, --settings and --output: shared by `gui`, the launcher and `screenshot`."""
    parser.add_argument("--engine-url", metavar="URL", default=None,
                        help="engine to connect to (default: the saved setting, else http://127.0.0.1:8001)")
    parser.add_argument("--token", default=None, help="bearer token of an engine started with --token")
    parser.add_argument("--settings", metavar="FILE", default=None,
                        help="settings file (default: gui.json in the user config folder, "
                             "or $ACE_COMPANION_CONFIG_DIR)")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="folder for result files you can drag into the DAW (default: the saved setting)")


def apply_connection_arguments(settings: Settings, args) -> Settings:
    if args.engine_url:
        settings.engine_url = args.engine_url
    if args.token is not None:
        settings.engine_token = args.token
    if args.output:
        settings.output_dir = args.output
    return settings
