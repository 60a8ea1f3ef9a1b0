"""Parity of the audio-conditioned tasks against upstream's own pipeline (tests/data/parity).

Acceptance as in tests/data/parity/README.md: exact ids/masks/codes/shapes; max|err|/RMS < 1e-4 for
hidden states and latents; < 2e-4 for audio. `repaint_turbo_middle` repaints a 2.3 s region, below
our 3 s minimum, so these runs switch `Pipeline.enforce_region_limits` off.
"""

import pytest
import torch

from engine.request import GenerationRequest
from tests.parity_utils import CHECKPOINTS, compare_dump, load_case

CASES = ["repaint_turbo_middle", "repaint_turbo_outpaint_end", "cover_turbo_strength1",
         "cover_turbo_strength05_reference", "lego_base_guitar", "extract_base_vocals",
         "complete_base_drums_bass_adg"]

_PIPELINES = {}


def pipeline_for(dit):
    from engine.pipeline import Pipeline

    if dit not in _PIPELINES:
        pipe = Pipeline.from_checkpoints(CHECKPOINTS, dit=dit, device="cpu", dtype=torch.float32)
        pipe.enforce_region_limits = False
        _PIPELINES[dit] = pipe
    return _PIPELINES[dit]


@pytest.mark.parametrize("name", CASES)
def test_parity_case(name):
    case, expected, path = load_case(name)
    request = GenerationRequest.from_json_file(path)
    out = pipeline_for(case["dit"]).generate(request, dump=True)
    assert tuple(out.audio[0].shape) == (2, case["derived"]["audio_samples"])
    problems = compare_dump(out.dump, expected)
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)
