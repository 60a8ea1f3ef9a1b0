"""Stand-ins for what surrounds the companion, for the tests and the benchmarks in `bench/`.

- `simulators.osc`: an OSC peer on loopback UDP that records what it receives.
- `simulators.reaper`: REAPER as the bridge sees it (OSC feedback and ace_companion.lua's mailbox).
- `simulators.ableton`: AbletonOSC and our AceCompanion insert server in front of a fake Live set.
- `simulators.pipelines`: engine pipelines without a model (echo, stand-in) and an echo engine.

Nothing here is imported by the engine, the bridge or the window at run time, and nothing here
imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.01) -> Any:
    """Poll until `predicate()` is truthy and return its value; AssertionError when the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")
