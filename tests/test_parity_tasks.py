"""Parity of the audio-conditioned tasks against upstream's own pipeline (tests/data/parity).

Acceptance as in tests/data/parity/README.md: exact ids/masks/codes/shapes; max|err|/RMS < 1e-4 for
hidden states and latents; < 2e-4 for audio.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from engine.request import GenerationRequest
from tests.conftest import PARITY

CASES = ["repaint_turbo_middle", "repaint_turbo_outpaint_end", "cover_turbo_strength1",
         "cover_turbo_strength05_reference", "lego_base_guitar", "extract_base_vocals",
         "complete_base_drums_bass_adg"]
EXACT_DTYPES = (torch.int64, torch.int32, torch.bool)
# Inputs of the run rather than results: compared exactly or not at all.
SKIP = {"noise"}


def load_case(name):
    path = PARITY / "cases" / f"{name}.json"
    return json.loads(path.read_text()), GenerationRequest.from_json_file(path), \
        load_file(str(PARITY / "cases" / f"{name}.expected.safetensors"))


_PIPELINES = {}


def pipeline_for(dit):
    from engine.pipeline import Pipeline

    if dit not in _PIPELINES:
        pipe = Pipeline.from_checkpoints(PARITY / "checkpoints", dit=dit, device="cpu", dtype=torch.float32)
        _PIPELINES[dit] = pipe
    return _PIPELINES[dit]


def relative_error(actual, expected):
    actual = actual.detach().to(torch.float64).cpu()
    expected = expected.to(torch.float64)
    rms = expected.pow(2).mean().sqrt().item()
    return (actual - expected).abs().max().item() / max(rms, 1e-12)


def compare_dump(dump, expected):
    """List of human-readable mismatches (empty when everything is within tolerance)."""
    problems = []
    for key, want in expected.items():
        if key in SKIP:
            continue
        if key not in dump:
            problems.append(f"{key}: missing from the dump")
            continue
        got = torch.as_tensor(dump[key])
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"{key}: shape {tuple(got.shape)} != {tuple(want.shape)}")
            continue
        if want.dtype in EXACT_DTYPES:
            if not torch.equal(got.to(want.dtype).cpu(), want):
                problems.append(f"{key}: differs ({int((got.to(want.dtype).cpu() != want).sum())} entries)")
            continue
        tolerance = 2e-4 if key == "audio" else 1e-4
        err = relative_error(got, want)
        if not err < tolerance:
            problems.append(f"{key}: max|err|/RMS = {err:.3g} (tolerance {tolerance:g})")
    return problems


@pytest.mark.parametrize("name", CASES)
def test_parity_case(name):
    case, request, expected = load_case(name)
    pipe = pipeline_for(case["dit"])
    out = pipe.generate(request, dump=True, enforce_region_limits=False)
    assert out.sample_rate == 48000
    assert tuple(out.audio[0].shape) == (2, case["derived"]["audio_samples"])
    assert torch.equal(torch.as_tensor(out.dump["noise"]), expected["noise"])
    problems = compare_dump(out.dump, expected)
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)
