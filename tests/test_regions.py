"""Region maths, repaint-mode resolution and the waveform splice (pure functions)."""

import json

import pytest
import torch

from engine.regions import check_region_length, frame_range, pad_source, ramp_mask, splice_waveform
from engine.request import RequestError
from engine.units import plan_region, seconds_to_frame
from tests.conftest import PARITY

SR = 48000


def _case(name):
    return json.loads((PARITY / "cases" / f"{name}.json").read_text())


def test_seconds_to_frame_truncates_like_upstream():
    assert seconds_to_frame(1.6) == 40
    assert seconds_to_frame(3.9) == 97
    assert seconds_to_frame(0.0) == 0
    assert seconds_to_frame(0.0399) == 0
    assert seconds_to_frame(0.04) == 1


def test_middle_region_matches_parity_case():
    case = _case("repaint_turbo_middle")
    source_samples = int(5.9 * SR)
    plan = plan_region(case["repainting_start"], case["repainting_end"], source_samples)
    assert (plan.left_pad_samples, plan.right_pad_samples) == (0, 0)
    total = (source_samples + plan.left_pad_samples + plan.right_pad_samples) // 1920
    assert total == case["derived"]["latent_frames"]
    assert list(frame_range(plan.start_s, plan.end_s, total)) == case["derived"]["repaint_frames"]


def test_outpaint_end_padding_keeps_float_truncation():
    case = _case("repaint_turbo_outpaint_end")
    source_samples = int(5.9 * SR)
    plan = plan_region(case["repainting_start"], case["repainting_end"], source_samples)
    assert plan.left_pad_samples == 0
    assert plan.right_pad_samples == 76799  # int((7.5 - 5.9) * 48000), not 76800
    total = (source_samples + plan.right_pad_samples) // 1920
    assert total == case["derived"]["latent_frames"] == 187
    assert list(frame_range(plan.start_s, plan.end_s, total)) == case["derived"]["repaint_frames"]


def test_negative_start_pads_left_and_shifts_both_ends():
    plan = plan_region(-2.0, 3.0, 5 * SR)
    assert plan.left_pad_samples == 2 * SR and plan.right_pad_samples == 0
    assert plan.start_s == 0.0 and plan.end_s == 5.0
    wave = torch.ones(2, 5 * SR)
    padded = pad_source(wave, plan)
    assert padded.shape == (2, 7 * SR)
    assert padded[:, :2 * SR].abs().max() == 0 and padded[:, 2 * SR:].min() == 1


def test_end_minus_one_means_source_end():
    plan = plan_region(1.0, -1.0, 5 * SR)
    assert plan.end_s == 5.0 and plan.right_pad_samples == 0
    assert plan_region(1.0, None, 5 * SR).end_s == 5.0


def test_frame_range_clamps_into_the_latent():
    assert frame_range(0.0, 100.0, 50) == (0, 50)
    assert frame_range(10.0, 12.0, 50) == (49, 50)  # start clamped to T-1, end at least start+1


@pytest.mark.parametrize("start,end,ok", [(0.0, 3.0, True), (1.0, 3.9, False), (0.0, 90.0, True),
                                          (0.0, 90.5, False), (-1.0, 2.5, True)])
def test_region_length_rules(start, end, ok):
    plan = plan_region(start, end, 100 * SR)
    if ok:
        check_region_length(plan, 100.0)
    else:
        with pytest.raises(RequestError) as err:
            check_region_length(plan, 100.0)
        assert "at least 3 s" in str(err.value) or "at most 90 s" in str(err.value)


def test_region_starting_after_the_source_is_refused():
    plan = plan_region(7.0, -1, 5 * SR)
    with pytest.raises(RequestError, match="after the end"):
        check_region_length(plan, 5.0)


def test_ramp_mask_shape_and_ramps():
    mask = ramp_mask(20, 8, 12, 3)
    assert mask[8:12].tolist() == [1.0] * 4
    assert torch.allclose(mask[5:8], torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(mask[12:15], torch.tensor([0.75, 0.5, 0.25]))
    assert mask[:5].abs().max() == 0 and mask[15:].abs().max() == 0
    edge = ramp_mask(10, 1, 9, 4)  # ramps cut at the array bounds
    assert edge[0] == pytest.approx(0.5) and edge[9] == pytest.approx(0.5)


def test_splice_keeps_source_outside_and_generated_inside():
    n = SR * 2
    source = torch.full((2, n), 0.25)
    generated = torch.full((2, n), -0.5)
    out = splice_waveform(generated, source, 0.5, 1.5, 0.025)
    cf = int(0.025 * SR)
    start, end = int(0.5 * SR), int(1.5 * SR)
    assert torch.equal(out[:, :start - cf], source[:, :start - cf])
    assert torch.equal(out[:, end + cf:], source[:, end + cf:])
    assert torch.equal(out[:, start:end], generated[:, start:end])
    ramp = out[0, start - cf:start]
    assert (ramp[1:] < ramp[:-1]).all()  # moves monotonically from source to generated


def test_splice_full_region_is_a_no_op_and_tail_is_kept():
    source = torch.rand(2, 1000)
    generated = torch.rand(2, 1000)
    assert splice_waveform(generated, source, 0.0, 1.0, 0.01) is generated
    longer = torch.rand(2, 1200)
    out = splice_waveform(longer, source, 0.0, 500 / SR, 0.0)
    assert out.shape == (2, 1200)
    assert torch.equal(out[:, 500:1000], source[:, 500:1000])
    assert torch.equal(out[:, 1000:], longer[:, 1000:])
