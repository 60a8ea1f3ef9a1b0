"""Sampler mechanics: schedules, DCW projections, guidance, repaint, cover switch, progress, cancel."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from engine import samplers
from engine.samplers import (
    APG,
    DCWSettings,
    RepaintSettings,
    SamplerSettings,
    adg,
    base_timesteps,
    boundary_soft_mask,
    dcw_correct,
    haar_lowpass,
    repaint_inject,
    sample,
    turbo_timesteps,
)
from engine.types import Cancelled


@pytest.mark.parametrize("shift, table", [
    (1.0, [1, .875, .75, .625, .5, .375, .25, .125]),
    (2.0, [1, 14 / 15, 6 / 7, 10 / 13, 2 / 3, 6 / 11, 0.4, 2 / 9]),
    (3.0, [1, 21 / 22, 0.9, 5 / 6, 0.75, 9 / 14, 0.5, 0.3]),
])
def test_turbo_schedule_matches_spec_tables(shift, table):
    t = turbo_timesteps(shift, 8)
    assert t.dtype == torch.float32
    assert torch.allclose(t, torch.tensor(table, dtype=torch.float32), atol=1e-7)


def test_turbo_steps_are_capped_at_20_and_base_ends_at_zero():
    assert len(turbo_timesteps(3.0, 50)) == 20
    assert len(turbo_timesteps(3.0, 4)) == 4
    base = base_timesteps(1.0, 4)
    assert base.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = base_timesteps(3.0, 8)
    assert float(shifted[0]) == 1.0 and float(shifted[-1]) == 0.0
    assert torch.allclose(shifted[:-1], turbo_timesteps(3.0, 8))


def test_haar_lowpass_is_an_orthogonal_projection():
    d = torch.randn(2, 10, 3, dtype=torch.float64)
    low = haar_lowpass(d)
    high = d - low
    assert torch.allclose(haar_lowpass(low), low)           # idempotent
    assert torch.allclose(haar_lowpass(high), torch.zeros_like(high), atol=1e-12)
    assert abs(float((low * high).sum())) < 1e-9             # orthogonal bands
    assert torch.allclose(low[:, 0], (d[:, 0] + d[:, 1]) / 2)
    assert torch.equal(low[:, 0], low[:, 1])


def test_haar_lowpass_pairs_an_odd_last_frame_with_zero():
    d = torch.randn(1, 5, 2)
    low = haar_lowpass(d)
    assert low.shape == d.shape
    assert torch.allclose(low[:, 4], d[:, 4] / 2)


def test_dcw_modes():
    x, x0 = torch.randn(1, 6, 4), torch.randn(1, 6, 4)
    settings = DCWSettings("double", 0.05, 0.02)
    assert torch.equal(dcw_correct(x, x, 0.7, settings), x)
    d = x - x0
    low = haar_lowpass(d)
    expected = x + 0.7 * 0.05 * low + 0.3 * 0.02 * (d - low)
    assert torch.allclose(dcw_correct(x, x0, 0.7, settings), expected, atol=1e-6)
    assert torch.allclose(dcw_correct(x, x0, 0.0, DCWSettings("low", 0.05)), x)
    assert torch.allclose(dcw_correct(x, x0, 1.0, DCWSettings("high", 0.05)), x)
    assert torch.allclose(dcw_correct(x, x0, 0.3, DCWSettings("pix", 0.1)), x + 0.1 * d, atol=1e-6)


def test_apg_keeps_only_the_part_orthogonal_to_the_condition():
    v_cond = torch.randn(1, 8, 3)
    assert torch.allclose(APG()(v_cond, v_cond * 0.5, 7.0), v_cond)  # difference parallel to v_cond
    assert torch.equal(APG()(v_cond, torch.randn(1, 8, 3), 1.0), v_cond)
    v_uncond = torch.randn(1, 8, 3)
    guided = APG(norm_threshold=0.0)(v_cond, v_uncond, 3.0)
    correction = (guided - v_cond).double()
    cos = (correction * v_cond.double()).sum(dim=1)
    assert torch.allclose(cos, torch.zeros_like(cos), atol=1e-5)


def test_apg_momentum_and_norm_clip():
    apg = APG()
    v_cond, v_uncond = torch.zeros(1, 4, 1), -torch.ones(1, 4, 1)
    apg(v_cond, v_uncond, 2.0)
    apg(v_cond, v_uncond, 2.0)
    assert torch.allclose(apg.running, torch.full((1, 4, 1), 1 - 0.75))
    # The projection is per channel over time: a difference orthogonal (over time) to v_cond survives,
    # clipped to norm 2.5 from its norm of 20.
    v_cond = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(1, 4, 1)
    diff = torch.full((1, 4, 1), 10.0)
    out = APG(momentum=0.0)(v_cond, v_cond - diff, 2.0) - v_cond
    assert torch.allclose(out.norm(dim=1), torch.tensor([[2.5]]), atol=1e-5)
    assert torch.allclose(out, torch.full((1, 4, 1), 1.25), atol=1e-5)


def test_adg_without_disagreement_returns_the_condition():
    x, v = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    out = adg(x, v, v.clone(), torch.tensor([0.6, 0.6]), 7.0)
    # acos is clamped at 1 - 1e-6, so the angle is never exactly 0: agreement up to ~1e-4.
    assert torch.allclose(out, v, atol=1e-3)


def test_repaint_injection_and_soft_boundary():
    mask = torch.tensor([[False] * 4 + [True] * 2 + [False] * 4])
    soft = boundary_soft_mask(mask, 2)
    assert torch.allclose(soft[0], torch.tensor([0, 0, 1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3, 0, 0]))
    assert torch.equal(boundary_soft_mask(torch.ones(1, 5, dtype=torch.bool), 3), torch.ones(1, 5))
    x, clean, noise = torch.randn(1, 10, 2), torch.randn(1, 10, 2), torch.randn(1, 10, 2)
    injected = repaint_inject(x, clean, mask, 0.25, noise)
    assert torch.equal(injected[:, 4:6], x[:, 4:6])
    assert torch.allclose(injected[:, :4], 0.25 * noise[:, :4] + 0.75 * clean[:, :4])


class FakeDenoiser:
    """v = scale * x, recording calls (rows and phase)."""

    def __init__(self, scale=0.5):
        self.scale = scale
        self.calls = []

    def __call__(self, x, t, phase):
        self.calls.append((x.shape[0], float(t[0]), phase))
        return self.scale * x


def test_sample_reports_progress_traces_and_uses_euler():
    noise = torch.randn(2, 6, 4)
    events, trace = [], {}
    settings = SamplerSettings(timesteps=turbo_timesteps(1.0, 4), trace=trace)
    out = sample(FakeDenoiser(0.5), noise, settings, progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4] and all(e.total == 4 for e in events)
    assert trace["sampler_xt"].shape == (4, 2, 6, 4) and torch.equal(trace["sampler_xt"][0], noise)
    assert torch.allclose(trace["sampler_t"], torch.tensor([1.0, 0.75, 0.5, 0.25]))
    # v = 0.5 x and four Euler steps of 0.25: x *= (1 - 0.125) each step.
    assert torch.allclose(out, noise * 0.875 ** 4, atol=1e-6)


def test_sample_cancel_raises_within_one_step():
    calls = []
    denoiser = FakeDenoiser()
    with pytest.raises(Cancelled):
        sample(denoiser, torch.randn(1, 4, 2), SamplerSettings(timesteps=turbo_timesteps(3.0, 8)),
               cancel=lambda: calls.append(1) or len(calls) > 2)
    assert len(denoiser.calls) == 2


class SplitDenoiser(FakeDenoiser):
    """With CFG rows [cond; uncond]: v_cond = 0.5 x, v_uncond = 0.5 x + 1 (they disagree)."""

    def __call__(self, x, t, phase):
        v = super().__call__(x, t, phase)
        half = x.shape[0] // 2
        return torch.cat([v[:half], v[half:] + 1.0])


@pytest.mark.parametrize("use_adg", [False, True])
def test_cfg_batches_cond_and_uncond_and_guides_only_inside_the_interval(monkeypatch, use_adg):
    guided_at = []  # the denoiser call count when guidance ran = the step it ran in
    denoiser = SplitDenoiser()
    apg_call, adg_call = APG.__call__, samplers.adg

    def spy_apg(self, *args):
        guided_at.append(len(denoiser.calls) - 1)
        return apg_call(self, *args)

    def spy_adg(*args):
        guided_at.append(len(denoiser.calls) - 1)
        return adg_call(*args)

    monkeypatch.setattr(APG, "__call__", spy_apg)
    monkeypatch.setattr(samplers, "adg", spy_adg)
    # t = 1, 0.75, 0.5, 0.25: the interval [0.6, 1] covers the first two steps only.
    settings = SamplerSettings(timesteps=base_timesteps(1.0, 4), guidance_scale=7.0, cfg_interval_start=0.6,
                               use_adg=use_adg)
    noise = torch.randn(1, 4, 2)
    out = sample(denoiser, noise, settings)
    assert all(rows == 2 for rows, _, _ in denoiser.calls)
    assert guided_at == [0, 1]

    # The unguided steps use v_cond as is: replaying them by hand from the sampler's state after
    # step 1 gives the output.
    trace = {}
    sample(SplitDenoiser(), noise, SamplerSettings(timesteps=base_timesteps(1.0, 4), guidance_scale=7.0,
                                                   cfg_interval_start=0.6, use_adg=use_adg, trace=trace))
    x = trace["sampler_xt"][2]
    for _ in range(2):
        x = x - 0.5 * x * 0.25
    assert torch.allclose(out, x, atol=1e-6)
    # ...while the guided steps did change the trajectory.
    assert not torch.allclose(trace["sampler_xt"][2], noise * (1 - 0.125) ** 2, atol=1e-3)


def test_cover_switch_changes_phase_at_the_switch_step():
    denoiser = FakeDenoiser()
    sample(denoiser, torch.randn(1, 4, 2), SamplerSettings(timesteps=turbo_timesteps(3.0, 8), switch_step=4))
    assert [phase for _, _, phase in denoiser.calls] == [0] * 4 + [1] * 4


def test_repaint_keeps_the_outside_on_the_source():
    noise, clean = torch.randn(1, 10, 2), torch.randn(1, 10, 2)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[:, 3:7] = True
    repaint = RepaintSettings(mask=mask, clean=clean, injection_ratio=1.0, crossfade_frames=0)
    out = sample(FakeDenoiser(), noise, SamplerSettings(timesteps=turbo_timesteps(3.0, 8), repaint=repaint))
    assert torch.allclose(out[:, :3], clean[:, :3]) and torch.allclose(out[:, 7:], clean[:, 7:])
    assert not torch.allclose(out[:, 3:7], clean[:, 3:7])
    # Injection for half the steps: the outside is then whatever the last steps made of it.
    repaint.injection_ratio, repaint.crossfade_frames = 0.5, 2
    trace = {}
    sample(FakeDenoiser(), noise, SamplerSettings(timesteps=turbo_timesteps(3.0, 8), repaint=repaint, trace=trace))
    t1 = float(trace["sampler_t"][1])
    assert torch.allclose(trace["sampler_xt"][1][:, :3], t1 * noise[:, :3] + (1 - t1) * clean[:, :3], atol=1e-6)


def test_sampler_imports_no_model_or_checkpoint_code():
    """The sampler is pure tensor code: the model comes in as a callable (layering rule)."""
    tree = ast.parse(Path(samplers.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    higher_or_model = ("engine.models", "engine.checkpoints", "engine.tasks", "engine.pipeline", "engine.service",
                       "engine.lm")
    assert "torch" in imported
    assert [name for name in imported if name and name.startswith(higher_or_model)] == []


class PreparedDenoiser(FakeDenoiser):
    """Offers `prepare(timesteps) -> step(x, k, phase)` like the DiT loop."""

    def __init__(self):
        super().__init__()
        self.prepared = []

    def prepare(self, timesteps):
        self.prepared.append(timesteps.clone())

        def step(x, k, phase):
            self.calls.append((x.shape[0], float(timesteps[k]), phase, k))
            return self.scale * x
        return step


def test_sampler_hands_a_prepared_denoiser_the_schedule_once_and_then_step_indices():
    noise = torch.randn(1, 6, 2)
    settings = SamplerSettings(timesteps=turbo_timesteps(3.0, 8), switch_step=5)
    plain = sample(FakeDenoiser(), noise, settings)
    denoiser = PreparedDenoiser()
    out = sample(denoiser, noise, settings)
    assert len(denoiser.prepared) == 1
    assert torch.equal(denoiser.prepared[0], turbo_timesteps(3.0, 8))
    assert [k for *_, k in denoiser.calls] == list(range(8))
    assert [phase for _, _, phase, _ in denoiser.calls] == [0] * 5 + [1] * 3
    assert torch.equal(out, plain)


def test_bf16_run_uses_bf16_rounded_timesteps():
    denoiser = FakeDenoiser()
    sample(denoiser, torch.randn(1, 4, 2, dtype=torch.bfloat16), SamplerSettings(timesteps=turbo_timesteps(3.0, 8)))
    assert [t for _, t, _ in denoiser.calls] == [1.0, 0.953125, 0.8984375, 0.83203125, 0.75, 0.64453125, 0.5,
                                                  0.30078125]
