"""DAW bridge: host state from REAPER / Ableton Live / MIDI in, engine jobs out, bar-exact clips back.

Torch-free: imports only `engine.request`, `engine.types`, `engine.units` and `engine.client` from the engine.
Entry points: `bridge.app.BridgeApp` (in-process API), `bridge.cli` (`ace-companion bridge`).
"""
