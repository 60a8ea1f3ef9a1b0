"""The source-task parity cases again, with the DiT loop padded to a 2 s length bucket (what the
compiled engine runs): padding must not move any tensor out of the parity tolerance."""

from __future__ import annotations

import pytest

import tests.test_parity_sampler_tasks as sampler_parity
from engine import pipeline
from engine.models.acestep import BUCKET_FRAMES, DiTLoop


@pytest.mark.parametrize("name", sampler_parity.SOURCE_CASES)
def test_bucketed_loop_keeps_sampler_parity(name, monkeypatch):
    lengths = []

    def bucketed(self, timesteps):
        loop = DiTLoop(self.dit.decoder, timesteps, self.phases[0][1].shape[1], self._prepared, bucket=BUCKET_FRAMES)
        lengths.append((loop.length.frames, loop.length.padded_frames))
        return loop

    monkeypatch.setattr(pipeline._Denoiser, "prepare", bucketed)
    sampler_parity.test_stored_inputs_reproduce_sampler_outputs(name)
    [(frames, padded)] = lengths
    assert padded % BUCKET_FRAMES == 0 and padded >= frames
