"""XL (4B) DiT and LoRA parity (tests/data/parity-xl) through `ace-companion render --dump`.

Acceptance as in tests/data/parity-xl/README.md: exact ids/masks/codes/shapes; max|err|/RMS < 1e-4
for hidden states and latents; < 2e-4 for audio. The render command runs in-process
(`ace_companion.cli.main`), which is the same code path as the console script without a second Python
start per case. `repaint_xl_turbo_middle` repaints a 2.2 s region, so it passes
`--allow-short-region` like the 2B repaint case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from tests.parity_utils import AUDIO_TOLERANCE, compare_dump, relative_error, write_case_request

XL_DATA = Path(__file__).parent / "data" / "parity-xl"
XL_CASES = XL_DATA / "cases"
XL_CHECKPOINTS = XL_DATA / "checkpoints"
CASES = ["t2m_xl_turbo_lyrics_metas", "repaint_xl_turbo_middle", "cover_xl_turbo_strength05_reference",
         "t2m_xl_base_cfg_apg", "lora_xl_turbo_scale1", "lora_xl_turbo_scale05"]


def load_xl_case(name: str):
    path = XL_CASES / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")), load_file(str(XL_CASES / f"{name}.expected.safetensors")), path


@pytest.mark.parametrize("name", CASES)
def test_render_dump_reproduces_case(name, tmp_path, capsys):
    from ace_companion.cli import main

    case, expected, path = load_xl_case(name)
    out, dump = tmp_path / "out.wav", tmp_path / "dump.safetensors"
    request = write_case_request(path, tmp_path)  # the request part of the case file
    code = main(["render", "--checkpoints", str(XL_CHECKPOINTS), "--request", str(request), "--out", str(out),
                 "--dump", str(dump), "--device", "cpu", "--allow-short-region", "--quiet"])
    assert code == 0, capsys.readouterr().err
    problems = compare_dump(load_file(str(dump)), expected)
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)
    audio, rate = sf.read(str(out), dtype="float32", always_2d=True)
    assert rate == 48000 and audio.shape == (case["derived"]["audio_samples"], 2)
    assert relative_error(torch.from_numpy(audio.T.copy()), expected["audio"]) < AUDIO_TOLERANCE

