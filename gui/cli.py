"""`ace-companion gui`: open the control window connected to an engine that is already running."""

from __future__ import annotations

import argparse

from gui.app import add_connection_arguments, apply_connection_arguments, make_application, make_client, quit_on_signals
from gui.settings import load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Open the control window connected to a running engine (start one with "
                          "`ace-companion engine`, or run `ace-companion` alone to start everything).")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = apply_connection_arguments(load_settings(args.settings), args)
    app = make_application()
    quit_on_signals(app)
    from gui.main_window import MainWindow
    window = MainWindow(settings, make_client(settings), bridge=None, settings_path=args.settings)
    window.show()
    return app.exec()
