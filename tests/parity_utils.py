"""Helpers shared by the parity tests: load a case, compare a dump with its expected tensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.request import GenerationRequest
from tests.conftest import PARITY

CASES_DIR = PARITY / "cases"
CHECKPOINTS = PARITY / "checkpoints"

# README acceptance: exact for ids/masks/shapes, max|err|/RMS < 1e-4 latents/states, < 2e-4 audio.
LATENT_TOLERANCE = 1e-4
AUDIO_TOLERANCE = 2e-4


# Keys of a case file that describe the case rather than the request (not part of the request schema).
CASE_ONLY_KEYS = {"name", "notes", "derived", "oracle", "tensors", "lm_call", "result", "phases"}


def case_request_fields(path: Path) -> dict:
    """The request part of a case file, with its relative audio paths made absolute."""
    case = json.loads(Path(path).read_text(encoding="utf-8"))
    fields = {key: value for key, value in case.items() if key not in CASE_ONLY_KEYS}
    for name in ("src_audio", "reference_audio"):
        if fields.get(name):
            fields[name] = str((Path(path).parent / fields[name]).resolve())
    return fields


def case_request(path: Path) -> GenerationRequest:
    """A case file as a validated `GenerationRequest` (what the engine's schema sees)."""
    return GenerationRequest.from_dict(case_request_fields(path))


def write_case_request(path: Path, folder: Path) -> Path:
    """Write the request part of a case file to `folder` (for the render CLI) and return its path."""
    out = Path(folder) / f"{Path(path).stem}.request.json"
    out.write_text(json.dumps(case_request_fields(path)), encoding="utf-8")
    return out


def load_case(name: str) -> tuple[dict, dict[str, torch.Tensor], Path]:
    path = CASES_DIR / f"{name}.json"
    case = json.loads(path.read_text(encoding="utf-8"))
    expected = load_file(str(CASES_DIR / f"{name}.expected.safetensors"))
    return case, expected, path


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return float((actual.double() - expected).abs().max() / expected.pow(2).mean().sqrt())


def compare_dump(dump: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """Problems (empty list = parity) for every tensor stored in the case."""
    problems = []
    for key, want in expected.items():
        if key not in dump:
            problems.append(f"{key}: missing from the dump")
            continue
        got = dump[key]
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"{key}: shape {tuple(got.shape)} != {tuple(want.shape)}")
            continue
        if not want.is_floating_point() or key == "chunk_masks":
            if not torch.equal(got.to(want.dtype), want):
                problems.append(f"{key}: values differ (must be exact)")
            continue
        tolerance = AUDIO_TOLERANCE if key == "audio" else LATENT_TOLERANCE
        err = relative_error(got, want)
        if not err < tolerance:
            problems.append(f"{key}: max|err|/RMS = {err:.3e} >= {tolerance:g}")
    return problems
