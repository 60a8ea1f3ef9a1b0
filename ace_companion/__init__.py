"""`ace-companion`: the one console command (`ace_companion.cli.main`) over engine, bridge and window.

This package only dispatches: each sub-command lives in the part it belongs to (engine/, bridge/,
gui/) and is imported when chosen, so `ace-companion bridge` and `ace-companion gui` stay torch-free.
"""
