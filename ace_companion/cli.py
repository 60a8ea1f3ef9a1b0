"""`ace-companion`: one console command with sub-commands.

Each sub-command lives in its own module, which exposes `add_arguments(parser)` and
`run(args) -> int`. Only the chosen module is imported, so `ace-companion gui` or
`ace-companion bridge` never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("engine.commands.render", "render one request (JSON) to audio, optionally dumping intermediate tensors"),
    "plan": ("engine.commands.plan", "run only the 5 Hz LM planner for a request and write PLAN.json"),
    "download": ("engine.commands.download", "download the published checkpoints into the checkpoints folder"),
    "make-tiny-checkpoints": ("engine.commands.tiny", "write tiny random checkpoints in the published layout"),
    "engine": ("engine.service.cli", "run the long-lived engine process (HTTP job API)"),
    "bridge": ("bridge.cli", "run the DAW bridge (REAPER / Ableton OSC, MIDI) against an engine"),
    "gui": ("gui.cli", "open the control window (connects to an engine)"),
    "screenshot": ("gui.screenshot", "save a screenshot of the control window to a PNG file"),
}
DEFAULT_COMMAND = ("gui.launcher", "start engine, bridge and window together (the default)")


def _top_level_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<22} {help_}" for name, (_, help_) in COMMANDS.items()]
    epilog = ("commands:\n" + "\n".join(lines) +
              "\n\nWith no command, `ace-companion` starts the engine (unless one is already running\n"
              "or --engine-url is given), the bridge and the control window.\n"
              "Run `ace-companion COMMAND --help` for the options of a command.")
    parser = argparse.ArgumentParser(
        prog="ace-companion",
        description="ACE Companion: ACE-Step 1.5 music generation inside your DAW.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


# Commands that open a window; without a display Qt would abort the process with a signal.
WINDOW_MODULES = ("gui.launcher", "gui.cli")


def display_problem(environ=None, platform: str | None = None) -> str | None:
    """Why no window can open here (Linux without X11/Wayland and no QT_QPA_PLATFORM), else None."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux") or environ.get("QT_QPA_PLATFORM"):
        return None
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    return ("ace-companion: no display (DISPLAY and WAYLAND_DISPLAY are unset), so the window cannot open; "
            "without a window run `ace-companion engine` and `ace-companion bridge`, "
            "or set QT_QPA_PLATFORM=offscreen")


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        extra = '".[gui]"' if missing.split(".")[0] in ("PyQt6", "sounddevice") else "."
        print(f"ace-companion: cannot start '{module_name}': missing Python module '{missing}'. "
              f"Install the project with `pip install -e {extra}`.", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        name = argv.pop(0)
        module_name, help_ = COMMANDS[name]
        parser = argparse.ArgumentParser(prog=f"ace-companion {name}", description=help_)
    elif argv and not argv[0].startswith("-"):
        print(f"ace-companion: unknown command '{argv[0]}'. Commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    elif "--version" in argv:
        from engine import __version__
        print(f"ace-companion {__version__}")
        return 0
    else:
        # No command: the launcher, whose options share the top-level help with the command list.
        name = None
        module_name, help_ = DEFAULT_COMMAND
        parser = _top_level_parser()

    module = _load(module_name)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    if module_name in WINDOW_MODULES:
        problem = display_problem()
        if problem:
            print(problem, file=sys.stderr)
            return 1
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
