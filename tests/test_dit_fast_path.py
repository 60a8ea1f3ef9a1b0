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
    assert padded % BUCKET_FRAMES == 0 and padded > frames  # every case has odd frames, so real padding


def test_compile_on_warms_up_the_loaded_dit_and_runs_it_compiled(monkeypatch):
    """`--compile on`: the start-up warm-up leaves a graph dynamic in the prompt length, so a
    request of a warmed-up length compiles nothing more; its audio matches the eager engine; a DiT
    that a later request names runs eager. (`aot_eager` stands in for inductor, see test_models.)"""
    import torch
    from torch._dynamo.utils import counters

    from engine.models import acestep
    from engine.request import GenerationRequest
    from tests.parity_utils import CHECKPOINTS

    real_compiled_run = acestep.compiled_run
    backends = []

    def traced_only(decoder, backend="inductor"):
        backends.append(backend)
        return real_compiled_run(decoder, "aot_eager")

    monkeypatch.setattr(acestep, "compiled_run", traced_only)
    torch._dynamo.reset()
    counters.clear()
    pipe = pipeline.Pipeline.from_checkpoints(CHECKPOINTS, dit="acestep-v15-turbo", device="cpu", compile="on",
                                              warm_up_s=(5.2,))
    assert pipe.compile_dit and backends and set(backends) == {"inductor"}
    warmed_graphs = counters["stats"]["unique_graphs"]
    assert warmed_graphs >= 1

    request = dict(caption="warm tape hiss", duration=5.2, inference_steps=3, seed=7)
    compiled = pipe.generate(GenerationRequest.from_dict(request))
    assert counters["stats"]["unique_graphs"] == warmed_graphs
    pipe.compile_dit = False
    eager = pipe.generate(GenerationRequest.from_dict(request))
    for a, b in zip(compiled.audio, eager.audio):
        assert abs(a - b).max() < 2e-4 * (b ** 2).mean() ** 0.5

    pipe.compile_dit = True
    calls = len(backends)
    pipe.generate(GenerationRequest.from_dict({**request, "dit": "acestep-v15-base", "inference_steps": 2}))
    assert len(backends) == calls


def test_a_failing_compiler_falls_back_to_eager_on_auto_and_is_an_error_on_on(monkeypatch):
    """The engine still starts when `--compile auto` meets a broken compiler; `--compile on` says why not."""
    import torch

    from engine.models import acestep
    from engine.types import EngineError

    def broken(decoder, backend="inductor"):
        def run(*args):
            raise RuntimeError("no working C compiler\nlong trace")
        return run

    monkeypatch.setattr(acestep, "compiled_run", broken)
    config = acestep.AceStepConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, head_dim=16, sliding_window=4)
    pipe = pipeline.Pipeline.__new__(pipeline.Pipeline)
    pipe.dit = acestep.AceStepConditionGenerationModel(config)
    pipe.device = torch.device("cuda")  # where auto means on; the small DiT itself runs on the CPU
    with pytest.warns(UserWarning, match=r"--compile auto: .*no working C compiler\); the DiT runs eager"):
        pipe.set_compile("auto", warm_up_s=(2.0,))
    assert not pipe.compile_dit
    with pytest.raises(EngineError, match=r"^--compile on: compiling the DiT step failed \(RuntimeError: no working"):
        pipe.set_compile("on", warm_up_s=(2.0,))
