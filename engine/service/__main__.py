"""`python -m engine.service [options]`: the engine process alone (what `ace-companion engine` runs).

`engine.process.EngineProcess` starts the engine this way, so the engine never reaches up into the
product's command dispatcher.
"""

import argparse

from engine.service import cli

parser = argparse.ArgumentParser(prog="ace-companion engine", description="run the long-lived engine process")
cli.add_arguments(parser)
raise SystemExit(int(cli.run(parser.parse_args()) or 0))
