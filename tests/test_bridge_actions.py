"""The pure action planner: one action table, host snapshot in, engine requests and clip places out."""

import pytest

from bridge import actions
from bridge.actions import ACTIONS, HostView, PlanError, plan_action
from bridge.config import BridgeConfig
from bridge.grid import Region, TempoMap
from engine.request import BASE_ONLY_TASKS, TASK_TYPES, GenerationRequest
from engine.units import MAX_REGION_S, MIN_REGION_S

BAR_S = 3 * 60 / 96  # 3/4 at 96 BPM
REGION = Region(2 * BAR_S, 10 * BAR_S)  # bars 3-10
HOST_SR = 44100


def host(**changes) -> HostView:
    values = dict(tempo_map=TempoMap.constant(96, 3, 4), region=REGION, sample_rate=HOST_SR, key="A minor",
                  project_name="Song", can_render=True, adapters=("reaper",))
    values.update(changes)
    return HostView(**values)


CONFIG = BridgeConfig(request_defaults={"caption": "warm keys"})


def test_every_action_runs_a_known_engine_task_and_base_only_tasks_ask_for_a_base_dit():
    for name, spec in ACTIONS.items():
        assert spec.task_type in TASK_TYPES
        assert spec.base_dit == (spec.task_type in BASE_ONLY_TASKS)
        lo, hi = spec.region_limits_s
        assert lo == MIN_REGION_S and hi >= MAX_REGION_S
        plan = plan_action(name, {}, host(), CONFIG)
        assert {r["task_type"] for r in plan.requests} == {spec.task_type}
        if spec.base_dit:
            assert {r["dit"] for r in plan.requests} == {actions.BASE_DIT}
        else:
            assert all("dit" not in r for r in plan.requests)
        assert (plan.source_span is None) == (spec.source == "none")


def test_repaint_window_around_the_region_on_host_samples_and_bars():
    plan = plan_action("repaint", {"seed": 3}, host(), CONFIG)
    (request,), (clip,) = plan.requests, plan.clips
    start_s, end_s = plan.source_span
    assert start_s < REGION.start_s and end_s > REGION.end_s
    for rate in (HOST_SR, 48000):  # whole samples at the host's and the engine's rate
        assert round(start_s * rate) == pytest.approx(start_s * rate, abs=1e-6)
        assert round(end_s * rate) == pytest.approx(end_s * rate, abs=1e-6)
    assert request["repainting_start"] == pytest.approx(REGION.start_s - start_s, abs=1e-6)
    assert request["repainting_end"] - request["repainting_start"] == pytest.approx(REGION.length_s, abs=1e-6)
    assert (request["bpm"], request["timesignature"], request["keyscale"]) == (96, "3", "A minor")
    assert request["seed"] == 3 and request["caption"] == "warm keys"
    assert clip.region == REGION and clip.window_start_s == start_s and not clip.new_track
    assert plan.host_sample_rate == HOST_SR and plan.project == "Song" and plan.insert_mode == "replace"


def test_continue_places_the_new_bars_after_the_region_and_sends_only_existing_audio():
    plan = plan_action("continue", {"bars": 4}, host(), CONFIG)
    (request,), (clip,) = plan.requests, plan.clips
    assert clip.region.start_s == pytest.approx(REGION.end_s)
    assert clip.region.length_s == pytest.approx(4 * BAR_S)
    assert plan.source_span[1] == pytest.approx(REGION.end_s)
    assert request["repainting_end"] - request["repainting_start"] == pytest.approx(4 * BAR_S, abs=1e-6)
    with pytest.raises(PlanError, match="positive"):
        plan_action("continue", {"bars": -2}, host(), CONFIG)


def test_generate_needs_no_source_and_lasts_at_least_the_minimum_context():
    plan = plan_action("generate", {}, host(region=Region(0, 4 * BAR_S)), CONFIG)
    assert plan.source_span is None and plan.source_file is None
    assert plan.requests[0]["duration"] == pytest.approx(CONFIG.min_context_s)
    assert plan.clips[0].region.length_s == pytest.approx(4 * BAR_S)


def test_stems_one_job_and_new_track_per_stem_in_the_order_asked():
    plan = plan_action("stems", {"stems": "vocals,drums,bass"}, host(), CONFIG)
    assert [r["track_name"] for r in plan.requests] == ["vocals", "drums", "bass"]
    assert [c.track_name for c in plan.clips] == ["vocals", "drums", "bass"]
    assert all(c.new_track for c in plan.clips)
    with pytest.raises(PlanError, match="kazoo"):
        plan_action("stems", {"stems": ["drums", "kazoo"]}, host(), CONFIG)


def test_region_limits_come_from_the_engine_units():
    short = Region(0, 1.0)
    for name in ACTIONS:
        with pytest.raises(PlanError, match=f"at least {MIN_REGION_S:g}"):
            plan_action(name, {"region": [short.start_s, short.end_s], "snap": "off"}, host(), CONFIG)
    with pytest.raises(PlanError, match=f"at most {MAX_REGION_S:g}"):
        plan_action("repaint", {"region": [0, MAX_REGION_S + 1], "snap": "off"}, host(), CONFIG)


def test_plan_errors_name_what_to_fix():
    cases = [
        ("dance", {}, host(), "unknown action"),
        ("repaint", {"bogus": 1}, host(), "bogus"),
        ("repaint", {}, host(tempo_map=None), "tempo is unknown"),
        ("repaint", {}, host(region=None), "no region selected"),
        ("repaint", {"insert": "sideways"}, host(), "insert mode"),
        ("repaint", {"inference_steps": 0}, host(), "inference_steps"),
        ("repaint", {}, host(can_render=False), "no source audio"),
        ("repaint", {"region": "3-4"}, host(), "two numbers"),
    ]
    for action, overrides, view, needle in cases:
        with pytest.raises(PlanError, match=needle):
            plan_action(action, overrides, view, CONFIG)


def test_a_source_file_replaces_rendering():
    plan = plan_action("cover", {}, host(can_render=False, source_file="/x/song.wav"), CONFIG)
    assert plan.source_file == "/x/song.wav"


def test_metas_follow_the_tempo_map_at_the_clip():
    tempo_map = TempoMap.from_seconds([(0.0, 96, 3, 4), (16 * BAR_S, 120, 4, 4)])
    after = Region(16 * BAR_S + 8.0, 16 * BAR_S + 16.0)  # 4 bars of 4/4 at 120 after the change
    plan = plan_action("repaint", {"region": [after.start_s, after.end_s]}, host(tempo_map=tempo_map), CONFIG)
    assert (plan.requests[0]["bpm"], plan.requests[0]["timesignature"]) == (120, "4")
    assert actions.timesignature_for(6, 8) == "6" and actions.timesignature_for(7, 8) == ""


def test_region_pcm_is_asked_for_only_when_the_engine_schema_knows_it(monkeypatch):
    plain = plan_action("repaint", {}, host(), CONFIG)
    assert actions.engine_takes_region_pcm() == ("output_region" in GenerationRequest.field_names())
    monkeypatch.setattr(actions, "engine_takes_region_pcm", lambda: True)
    monkeypatch.setattr(GenerationRequest, "from_dict", classmethod(lambda cls, data: None))
    asked = plan_action("repaint", {}, host(), CONFIG).requests[0]
    window_start = plain.clips[0].window_start_s
    assert asked["output_region"] == pytest.approx([REGION.start_s - window_start, REGION.end_s - window_start])
    assert asked["output_sample_rate"] == HOST_SR
