"""The bridge's one user-facing error type."""


class BridgeError(RuntimeError):
    """An action cannot run; the message tells the musician what to fix (no traceback needed)."""
