"""The planner inside the pipeline and `render` on tiny checkpoints (DiT + VAE + text encoder + LM)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from engine.pipeline import Pipeline
from engine.request import GenerationRequest
from engine.types import EngineError
from tests.cli_utils import run_cli
from tests.lm_utils import one_torch_thread  # noqa: F401 (autouse fixture)

TURBO = "acestep-v15-turbo"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory, tiny_checkpoints, tiny_lm_checkpoints):
    """The session's tiny DiT/VAE/text encoder and tiny LM under one checkpoints folder (links)."""
    root = tmp_path_factory.mktemp("tiny_all")
    for source in (tiny_checkpoints, tiny_lm_checkpoints):
        for folder in source.iterdir():
            (root / folder.name).symlink_to(folder)
    return root


@pytest.fixture(scope="module")
def pipeline(tiny_root):
    pipe = Pipeline.from_checkpoints(tiny_root, dit=TURBO, lm="0.6B", device="cpu")
    pipe.lm.caption_max_tokens = 12
    return pipe


def test_load_lm_switches_and_unloads(tiny_root):
    pipe = Pipeline.from_checkpoints(tiny_root, dit=TURBO, device="cpu")
    assert pipe.info()["lm"] is None
    with pytest.raises(EngineError, match="--lm"):
        pipe.generate(GenerationRequest.from_dict({"caption": "x", "thinking": True, "duration": 2.0}))
    pipe.load_lm("acestep-5Hz-lm-0.6B")
    assert pipe.info()["lm"] == "acestep-5Hz-lm-0.6B"
    with pytest.raises(EngineError, match="1.7B"):
        pipe.load_lm("1.7B")  # folder absent: a clear error, the loaded LM stays
    assert pipe.info()["lm"] == "acestep-5Hz-lm-0.6B"
    pipe.load_lm(None)
    assert pipe.info()["lm"] is None


def test_cot_only_plan_merges_metas_into_text2music(pipeline):
    request = GenerationRequest.from_dict({"caption": "calm piano", "duration": 2.0, "seed": 3,
                                           "inference_steps": 2})
    stages = []
    out = pipeline.generate(request, progress=lambda e: stages.append(e.stage), dump=True)
    plan = out.lm_plan
    assert [p["generation_phase"] for p in plan["phases"]] == ["cot"]
    assert out.request["task_type"] == "text2music" and out.request["audio_codes"] is None
    assert out.request["bpm"] == plan["metadata"]["bpm"] and out.request["duration"] == 2.0
    assert out.request["caption"] == plan["metadata"]["caption"]
    assert "lm_cot" in stages and stages.index("lm_cot") < stages.index("diffusion")
    assert bytes(out.dump["lm_cot_text"].tolist()).decode() == plan["cot_text"]
    assert out.dump["lm_audio_codes"].numel() == 0


def test_thinking_plans_codes_and_renders_a_cover(pipeline):
    request = GenerationRequest.from_dict({"caption": "calm piano", "thinking": True, "duration": 2.0,
                                           "seed": 3, "inference_steps": 2})
    out = pipeline.generate(request, dump=True)
    plan = out.lm_plan
    assert [p["generation_phase"] for p in plan["phases"]] == ["cot", "codes"]
    assert len(plan["audio_code_values"]) == 10
    assert out.request["task_type"] == "cover" and out.request["audio_codes"] == plan["audio_codes"]
    assert out.dump["lm_audio_codes"].tolist() == plan["audio_code_values"]
    assert out.audio[0].shape[0] == 2 and out.audio[0].shape[1] > 0


def test_render_cli_with_thinking_writes_audio_and_dump(tiny_root, tmp_path):
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"caption": "calm piano", "thinking": True, "duration": 2.0, "seed": 1,
                                   "inference_steps": 2, "bpm": 100, "keyscale": "C major",
                                   "timesignature": "4"}))
    out, dump = tmp_path / "out.wav", tmp_path / "dump.safetensors"
    proc = run_cli("render", "--checkpoints", str(tiny_root), "--request", str(request), "--out", str(out),
                   "--dump", str(dump), "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    tensors = load_file(str(dump))
    cot = bytes(tensors["lm_cot_text"].tolist()).decode()
    assert cot.startswith("<think>\n") and "bpm: 100" in cot and "keyscale: C major" in cot
    assert tensors["lm_audio_codes"].dtype == torch.int64 and tensors["lm_audio_codes"].numel() == 10
