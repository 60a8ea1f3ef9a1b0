import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import grid
from bridge.grid import GridError, Region, TempoMap, TempoPoint
from engine.units import MAX_DURATION_S


def test_bar_length_for_common_meters():
    assert grid.bar_length_qn(4, 4) == 4
    assert grid.bar_length_qn(3, 4) == 3
    assert grid.bar_length_qn(6, 8) == 3
    assert grid.bar_length_qn(7, 8) == 3.5
    assert grid.bar_length_qn(5, 4) == 5
    assert grid.bar_length_qn(2, 2) == 4


def test_bars_to_samples_matches_formula():
    # 8 bars of 3/4 at 96 BPM = 24 QN = 15 s
    assert grid.bars_to_samples(8, 96, 3, 4, 44100) == 661500
    assert grid.bars_to_samples(8, 96, 3, 4, 48000) == 720000
    # 1 bar 4/4 at 120 = 2 s
    assert grid.bars_to_samples(1, 120, 4, 4, 44100) == 88200
    # 7/8 at 140 BPM: 3.5 QN * 60/140 s
    assert grid.bars_to_samples(2, 140, 7, 8, 48000) == round(7 * 60 / 140 * 48000)


def test_bad_meter_and_tempo_are_named():
    with pytest.raises(GridError, match="denominator"):
        grid.bar_length_qn(4, 3)
    with pytest.raises(GridError, match="numerator"):
        grid.bar_length_qn(0, 4)
    with pytest.raises(GridError, match="tempo"):
        grid.qn_seconds(0)
    with pytest.raises(GridError, match="finite"):
        grid.qn_seconds(float("nan"))


def test_seconds_samples_round_trip():
    assert grid.seconds_to_samples(1.5, 44100) == 66150
    assert grid.samples_to_seconds(66150, 44100) == 1.5
    # spans tile: two adjacent spans add up to the whole
    a = grid.span_samples(0.1, 0.3333, 44100)
    b = grid.span_samples(0.3333, 0.9, 44100)
    assert a + b == grid.span_samples(0.1, 0.9, 44100)


def test_constant_map_conversions():
    m = TempoMap.constant(96, 3, 4)
    assert m.qn_to_seconds(24) == pytest.approx(15.0)
    assert m.seconds_to_qn(15.0) == pytest.approx(24)
    assert m.qn_to_bar(24) == pytest.approx(8)
    assert m.bar_to_seconds(8) == pytest.approx(15.0)
    assert grid.beats_to_samples(24, m, 44100) == 661500
    assert grid.samples_to_beats(661500, 96, 44100) == pytest.approx(24)


def test_tempo_map_with_tempo_and_meter_changes():
    # 2 bars of 4/4 at 120 (8 QN = 4 s), then 3/4 at 60 from QN 8
    m = TempoMap([TempoPoint(0, 120, 4, 4), TempoPoint(8, 60, 3, 4)])
    assert m.qn_to_seconds(8) == pytest.approx(4.0)
    assert m.qn_to_seconds(11) == pytest.approx(7.0)  # one 3/4 bar at 60 BPM = 3 s
    assert m.seconds_to_qn(7.0) == pytest.approx(11)
    assert m.qn_to_bar(8) == pytest.approx(2)
    assert m.qn_to_bar(11) == pytest.approx(3)
    assert m.bar_to_qn(4) == pytest.approx(14)
    assert m.bar_to_seconds(3) == pytest.approx(7.0)
    assert m.point_at_seconds(5.0).num == 3
    assert m.point_at_qn(2).bpm == 120


def test_tempo_map_from_seconds_like_reaper_markers():
    m = TempoMap.from_seconds([(0.0, 120, 4, 4), (4.0, 60, 3, 4)])
    assert m.points[1].qn == pytest.approx(8)
    assert m.qn_to_seconds(11) == pytest.approx(7.0)
    assert m.to_list()[1]["time"] == pytest.approx(4.0)


def test_tempo_map_first_point_is_moved_to_zero():
    m = TempoMap([TempoPoint(4, 100, 4, 4)])
    assert m.points[0].qn == 0
    assert m.qn_to_seconds(1) == pytest.approx(0.6)


@given(st.floats(30, 300), st.sampled_from([(4, 4), (3, 4), (6, 8), (7, 8), (5, 4)]),
       st.floats(0, 1000))
def test_qn_seconds_round_trip_property(bpm, meter, qn):
    m = TempoMap([TempoPoint(0, bpm, *meter), TempoPoint(16, bpm * 1.5, 4, 4), TempoPoint(40, bpm / 2, *meter)])
    assert m.seconds_to_qn(m.qn_to_seconds(qn)) == pytest.approx(qn, rel=1e-9, abs=1e-7)
    assert m.bar_to_qn(m.qn_to_bar(qn)) == pytest.approx(qn, rel=1e-9, abs=1e-7)


def test_region_validation_messages():
    with pytest.raises(GridError, match="negative"):
        Region(-1, 2)
    with pytest.raises(GridError, match="not after"):
        Region(5, 4)
    with pytest.raises(GridError, match="finite"):
        Region(0, float("nan"))
    with pytest.raises(GridError, match="number"):
        Region("a", 3)


def test_snap_region_to_bars_modes():
    m = TempoMap.constant(120, 4, 4)  # bar = 2 s
    r = Region(2.3, 9.1)
    assert grid.snap_region_to_bars(r, m, "nearest") == Region(2.0, 10.0)
    assert grid.snap_region_to_bars(r, m, "outward") == Region(2.0, 10.0)
    assert grid.snap_region_to_bars(r, m, "inward") == Region(4.0, 8.0)
    # tiny region still gives one bar
    assert grid.snap_region_to_bars(Region(4.1, 4.2), m, "nearest") == Region(4.0, 6.0)
    # float noise near a bar line does not add a bar
    assert grid.snap_region_to_bars(Region(2.0000000001, 5.9999999999), m, "outward") == Region(2.0, 6.0)
    with pytest.raises(GridError):
        grid.snap_region_to_bars(r, m, "sideways")


def test_snap_region_with_meter_change():
    m = TempoMap([TempoPoint(0, 120, 4, 4), TempoPoint(8, 60, 3, 4)])  # bars at 0,2,4 s then 7,10,...
    snapped = grid.snap_region_to_bars(Region(3.5, 8.0), m, "outward")
    assert snapped == Region(2.0, 10.0)


def test_region_bars_and_beats():
    m = TempoMap.constant(96, 3, 4)
    r = Region.from_beats(6, 30, m)  # bar 2 .. bar 10 of 3/4
    first, count = grid.region_bars(r, m)
    assert first == pytest.approx(2) and count == pytest.approx(8)
    assert r.to_beats(m) == pytest.approx((6, 30))
    assert r.samples(44100) == 661500


def test_context_window_short_region_is_centered_to_ten_seconds():
    w = grid.context_window(Region(20, 24))
    assert w.duration_s == pytest.approx(10)
    assert w.start_s == pytest.approx(17) and w.end_s == pytest.approx(27)
    assert (w.repaint_start_s, w.repaint_end_s) == pytest.approx((3, 7))


def test_context_window_at_project_start_extends_right():
    w = grid.context_window(Region(1, 5))
    assert w.start_s == 0 and w.end_s == pytest.approx(10)
    assert (w.repaint_start_s, w.repaint_end_s) == pytest.approx((1, 5))


def test_context_window_pads_full_regions():
    w = grid.context_window(Region(30, 50))  # region fills the whole 20 s window -> pad 1 s each side
    assert (w.start_s, w.end_s) == pytest.approx((29, 51))
    assert w.region.length_s / w.duration_s < 0.95
    w = grid.context_window(Region(0, 40))  # at the start: padding goes right, enough to drop below 95 %
    assert w.start_s == 0 and w.end_s >= 42
    assert 40 / w.end_s < 0.95
    w = grid.context_window(Region(20, 29.6))  # 9.6 / 10 = 0.96 of the minimum window -> padded
    assert w.duration_s == pytest.approx(12)


def test_context_window_cap_and_errors():
    w = grid.context_window(Region(10, 40), min_window_s=10, max_window_s=31)
    assert w.duration_s == pytest.approx(31)
    assert w.start_s <= 10 and w.end_s >= 40
    with pytest.raises(GridError, match="longer than the engine"):
        grid.context_window(Region(0, 100), max_window_s=60)
    with pytest.raises(GridError, match="min context"):
        grid.context_window(Region(0, 5), min_window_s=30, max_window_s=20)
    # never more than the engine limit, whatever the caller asks
    w = grid.context_window(Region(0, 599.5), max_window_s=10_000, min_window_s=10)
    assert w.duration_s <= MAX_DURATION_S + 1e-9


def test_context_window_snaps_to_bars():
    m = TempoMap.constant(96, 3, 4)  # bar = 1.875 s
    w = grid.context_window(Region(15, 30), tempo=m)
    bar_start, bar_end = m.seconds_to_bar(w.start_s), m.seconds_to_bar(w.end_s)
    assert bar_start == pytest.approx(round(bar_start)) and bar_end == pytest.approx(round(bar_end))
    assert w.start_s <= 14 and w.end_s >= 31  # still padded
    assert w.repaint_end_s - w.repaint_start_s == pytest.approx(15)


@given(st.floats(0, 500), st.floats(0.5, 95), st.floats(10, 200))
def test_context_window_invariants(start, length, max_window):
    region = Region(start, start + length)
    length = region.length_s
    if length > max_window:
        with pytest.raises(GridError):
            grid.context_window(region, max_window_s=max_window)
        return
    w = grid.context_window(region, max_window_s=max_window)
    assert w.start_s >= 0
    assert w.start_s <= region.start_s + 1e-9 and w.end_s >= region.end_s - 1e-9
    assert w.duration_s <= max_window + 1e-6
    assert w.duration_s >= min(10, max_window) - 1e-6
    assert w.repaint_start_s == pytest.approx(region.start_s - w.start_s)
    if w.duration_s < max_window - 1e-6 and w.start_s > 0:
        assert length / w.duration_s < 0.95 + 1e-9


def test_continuation_window():
    w = grid.continuation_window(Region(20, 28), 8)
    assert w.end_s == pytest.approx(36)
    assert w.start_s == pytest.approx(20)  # the region itself is >= 10 s - new part
    assert w.region == Region(28, 36)
    assert (w.repaint_start_s, w.repaint_end_s) == pytest.approx((8, 16))
    w = grid.continuation_window(Region(20, 23), 3)  # short: context grows to 10 s total
    assert w.duration_s == pytest.approx(10) and w.start_s == pytest.approx(16)
    w = grid.continuation_window(Region(0, 100), 20, max_window_s=60)
    assert w.duration_s == pytest.approx(60) and w.start_s == pytest.approx(60)
    with pytest.raises(GridError):
        grid.continuation_window(Region(0, 4), 0)
    with pytest.raises(GridError):
        grid.continuation_window(Region(0, 4), float("inf"))
    assert math.isfinite(w.repaint_end_s)
