"""The four text2music parity cases, through Pipeline.generate(dump=True) and the render CLI."""

from __future__ import annotations

import pytest
import soundfile as sf
from safetensors.torch import load_file

from engine.request import GenerationRequest
from tests.cli_utils import run_cli
from tests.parity_utils import CHECKPOINTS, case_request, compare_dump, load_case, write_case_request

T2M_CASES = [
    "t2m_turbo_shift3_odd_instrumental",
    "t2m_turbo_shift1_lyrics_metas_short",
    "t2m_base_cfg_apg",
    "t2m_turbo_batch2",
]


@pytest.mark.parametrize("name", T2M_CASES)
def test_pipeline_reproduces_case(pipeline, name):
    case, expected, path = load_case(name)
    request = case_request(path)
    events = []
    result = pipeline.generate(request, progress=events.append, dump=True)

    assert compare_dump(result.dump, expected) == []
    assert pipeline.info()["dit"] == case["dit"]
    assert result.seeds == case["derived"].get("seeds", [case["seed"]])
    assert len(result.audio) == request.batch_size
    for item in result.audio:
        assert item.shape == (2, case["derived"]["audio_samples"])
    steps = [e for e in events if e.stage == "diffusion"]
    assert [e.step for e in steps] == list(range(1, len(expected["sampler_t"]) + 1))


def test_render_cli_reproduces_case(tmp_path):
    name = "t2m_turbo_shift3_odd_instrumental"
    case, expected, path = load_case(name)
    out, dump = tmp_path / "out.wav", tmp_path / "dump.safetensors"
    proc = run_cli("render", "--checkpoints", str(CHECKPOINTS), "--request", str(write_case_request(path, tmp_path)),
                   "--out", str(out), "--dump", str(dump), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "diffusion" in proc.stderr
    assert compare_dump(load_file(str(dump)), expected) == []
    audio, rate = sf.read(str(out), always_2d=True)
    assert rate == 48000 and audio.shape == (case["derived"]["audio_samples"], 2)
    assert abs(abs(audio).max() - 10 ** (-1 / 20)) < 1e-4


# ----------------------------------------------------------------------------- pipeline behaviour
def test_cancel_stops_within_one_step(pipeline):
    from engine.types import Cancelled

    events = []
    request = GenerationRequest(caption="test", duration=5.0, seed=1)
    cancel = lambda: sum(e.stage == "diffusion" for e in events) >= 2  # noqa: E731
    with pytest.raises(Cancelled):
        pipeline.generate(request, progress=events.append, cancel=cancel)
    assert sum(e.stage == "diffusion" for e in events) == 2
    assert not any(e.stage == "decode" for e in events)


def test_random_seed_is_reported_and_reproducible(pipeline):
    first = pipeline.generate(GenerationRequest(caption="seed test", duration=5.0, seed=None))
    assert len(first.seeds) == 1 and 0 <= first.seeds[0] < 2 ** 32
    again = pipeline.generate(GenerationRequest(caption="seed test", duration=5.0, seed=first.seeds[0]))
    assert (first.audio[0] == again.audio[0]).all()
    info = pipeline.info()
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["lm"] is None


def test_thinking_without_lm_is_a_clear_error(pipeline):
    from engine.types import EngineError

    with pytest.raises(EngineError, match="--lm"):
        pipeline.generate(GenerationRequest(caption="x", duration=5.0, thinking=True))


def test_unknown_dit_folder_is_a_checkpoint_error(pipeline):
    from engine.types import CheckpointError

    with pytest.raises(CheckpointError, match="acestep-v15-nope"):
        pipeline.generate(GenerationRequest(caption="x", duration=5.0, dit="acestep-v15-nope"))
    assert pipeline.info()["dit"] in ("acestep-v15-turbo", "acestep-v15-base")
