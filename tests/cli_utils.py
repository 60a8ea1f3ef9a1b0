"""Run `ace-companion` sub-commands in this process, as the console script would.

A subprocess per CLI test costs a cold start of torch, transformers and diffusers (seconds each on
CI's two cores). Calling the same `main(argv)` in-process runs the same parsing, exit codes and
messages; only tests about the process itself (imports, signals) still start one.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*argv: str, env: dict[str, str | None] | None = None) -> CliResult:
    """`ace-companion ARGV...` in-process; `env` sets (or with None, removes) variables for the call."""
    from ace_companion.cli import main

    saved = {name: os.environ.get(name) for name in (env or {})}
    out, err = io.StringIO(), io.StringIO()
    try:
        for name, value in (env or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse errors and explicit exits
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
                if isinstance(exc.code, str):
                    err.write(exc.code + "\n")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return CliResult(int(code or 0), out.getvalue(), err.getvalue())
