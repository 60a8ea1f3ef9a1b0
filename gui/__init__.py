"""The PyQt6 control window: a client of the engine's HTTP API that embeds the DAW bridge.

Nothing in this package imports torch; it reaches the engine only through `engine.client`.
"""
