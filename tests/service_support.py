"""Small helpers for the service tests. The stand-in pipeline is `simulators.pipelines.StandInPipeline`,
the engine on loopback `engine.service.threaded.InProcessEngine`."""

from __future__ import annotations

import numpy as np


def write_tone(path, seconds: float = 1.0, sample_rate: int = 48000) -> str:
    """A short stereo sine WAV, for upload tests."""
    import soundfile

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.2 * np.sin(2 * np.pi * 220.0 * t).astype(np.float32)
    soundfile.write(str(path), np.stack([tone, tone], axis=1), sample_rate)
    return str(path)


# What a proper client (engine.client.EngineClient) sends with every request.
CLIENT_HEADERS = {"X-ACE-Companion": "1"}


def api_client(app, **kwargs):
    """A TestClient that talks to `app` as EngineClient does: addressed to 127.0.0.1, with its header.

    (TestClient's default host "testserver" is not a name of the engine, so the engine refuses it.)"""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1", headers={**CLIENT_HEADERS, **kwargs.pop("headers", {})},
                      **kwargs)
