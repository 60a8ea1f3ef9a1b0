"""The VRAM budget: when to keep the text encoder / VAE / LM off the GPU, and how they move."""

from __future__ import annotations

import types

import pytest
import torch

from engine import vram
from engine.models.vae import VAE
from engine.vram import GIB, Offloaded, plan_vram


class _Recorder(torch.nn.Linear):
    """A module that remembers where it was asked to go."""

    def __init__(self):
        super().__init__(2, 2)
        self.moves: list[str] = []

    def to(self, *args, **kwargs):
        self.moves.append(str(args[0]))
        return self


def _gpu(monkeypatch, total_gib: float):
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: types.SimpleNamespace(total_memory=int(total_gib * GIB)))
    return torch.device("cuda")


def test_cpu_never_offloads():
    assert plan_vram(torch.device("cpu"), True, 50 * GIB).offload is False


@pytest.mark.parametrize("total_gib, parts_gib, low_vram, offload", [
    (24, 9 + 1.5, None, False),   # XL bf16 + text encoder + VAE on a 24 GB card: fits
    (12, 9 + 1.5, None, True),    # the same on 12 GB: offload
    (80, 5, True, True),          # --low-vram forces it
    (12, 9 + 1.5, False, False),  # forced off
])
def test_plan_by_gpu_size(monkeypatch, total_gib, parts_gib, low_vram, offload):
    plan = plan_vram(_gpu(monkeypatch, total_gib), low_vram, int(parts_gib * GIB))
    assert plan.offload is offload
    assert plan.gpu_total_mib == pytest.approx(total_gib * 1024)
    assert plan.to_dict()["reason"]


def test_offloaded_moves_only_around_stage_methods():
    module = _Recorder()
    owner = VAE.__new__(VAE)
    owner.model = module
    calls = []
    owner.decode = lambda latents: calls.append(list(module.moves)) or "audio"
    owner.device = torch.device("cuda")
    proxy = Offloaded(owner, module, torch.device("cuda"))
    assert module.moves == ["cpu"]
    assert proxy.device == torch.device("cuda") and proxy.model is module and proxy.wrapped is owner
    assert proxy.decode("x") == "audio"
    assert calls == [["cpu", "cuda"]]  # on the GPU while decoding
    assert module.moves == ["cpu", "cuda", "cpu"]  # and back after


def test_pipeline_reports_its_plan(monkeypatch):
    from engine.pipeline import Pipeline
    from tests.test_parity_xl import XL_CHECKPOINTS

    pipeline = Pipeline.from_checkpoints(XL_CHECKPOINTS, dit="acestep-v15-xl-base", device="cpu")
    assert pipeline.info()["vram"]["offload"] is False
    # pretend the pipeline runs on a 2 GiB GPU: the plan offloads and wraps the stage owners
    monkeypatch.setattr(vram.torch.cuda, "get_device_properties",
                        lambda device: types.SimpleNamespace(total_memory=2 * GIB))
    pipeline.device = torch.device("cuda")
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)
    assert pipeline.plan_vram().offload is True
    assert isinstance(pipeline.vae, Offloaded) and isinstance(pipeline.text_encoder, Offloaded)
    pipeline.low_vram = False
    assert pipeline.plan_vram().offload is False
    assert isinstance(pipeline.vae, VAE)
