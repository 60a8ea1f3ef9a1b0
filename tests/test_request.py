import json

import pytest

from engine.request import GenerationRequest, RequestError, normalize_timesignature
from tests.conftest import PARITY
from tests.parity_utils import CASE_ONLY_KEYS, case_request


def test_every_parity_case_parses_as_a_request():
    for path in sorted((PARITY / "cases").glob("*.json")):
        req = case_request(path)
        data = json.loads(path.read_text())
        assert req.task_type == data["task_type"]
        if data["src_audio"]:
            assert req.src_audio.endswith(data["src_audio"].split("/")[-1])
            assert (path.parent / data["src_audio"]).resolve().samefile(req.src_audio)


@pytest.mark.parametrize("field,value", [
    ("task_type", "remix"), ("bpm", 12), ("bpm", 301), ("bpm", "fast"), ("duration", 601),
    ("duration", float("nan")), ("batch_size", 9), ("batch_size", 0), ("keyscale", "H minor"),
    ("timesignature", "5"), ("track_name", "kazoo"), ("audio_cover_strength", 1.5),
    ("repaint_mode", "wild"), ("lm_top_p", 2.0), ("use_adg", "yes"), ("inference_steps", 0),
])
def test_bad_fields_are_named_in_the_error(field, value):
    with pytest.raises(RequestError) as info:
        GenerationRequest.from_dict({"caption": "x", field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_unknown_fields_are_refused_and_case_metadata_is_not_part_of_the_schema():
    with pytest.raises(RequestError) as info:
        GenerationRequest.from_dict({"captoin": "typo"})
    assert info.value.field == "captoin"
    for key in sorted(CASE_ONLY_KEYS):
        with pytest.raises(RequestError) as info:
            GenerationRequest.from_dict({"caption": "x", key: "n"})
        assert info.value.field == key


@pytest.mark.parametrize("field,value", [
    ("infer_method", "sde"), ("sampler_mode", "heun"), ("cover_noise_strength", 0.3), ("dcw_wavelet", "db4"),
])
def test_options_the_engine_does_not_honour_are_refused(field, value):
    with pytest.raises(RequestError) as info:
        GenerationRequest.from_dict({"caption": "x", field: value})
    assert info.value.field == field and "not supported" in str(info.value)


def test_the_honoured_values_of_those_options_pass():
    req = GenerationRequest.from_dict({"caption": "x", "infer_method": "ode", "sampler_mode": "euler",
                                       "cover_noise_strength": 0, "dcw_wavelet": "haar"})
    assert (req.infer_method, req.sampler_mode, req.cover_noise_strength) == ("ode", "euler", 0.0)


def test_a_request_is_validated_once():
    req = GenerationRequest.from_dict({"caption": "x", "timesignature": " 3/4 "})
    req.batch_size = 99  # not re-checked: the boundary already validated this object
    assert req.ensure_valid() is req
    fresh = GenerationRequest(caption="x", batch_size=99)
    with pytest.raises(RequestError):
        fresh.ensure_valid()
    moved = req.with_inputs(src_audio="/tmp/a.wav")
    assert moved.src_audio == "/tmp/a.wav" and moved.ensure_valid() is moved


def test_source_tasks_need_source_audio():
    with pytest.raises(RequestError) as info:
        GenerationRequest.from_dict({"task_type": "repaint", "repainting_start": 1, "repainting_end": 5})
    assert info.value.field == "src_audio"
    req = GenerationRequest.from_dict({"task_type": "cover", "audio_codes": [1, 2, 3]})
    assert req.audio_codes == [1, 2, 3]


def test_inverted_region_is_refused():
    with pytest.raises(RequestError) as info:
        GenerationRequest.from_dict({"task_type": "repaint", "src_audio": "a.wav",
                                     "repainting_start": 5, "repainting_end": 4})
    assert info.value.field == "repainting_end"


def test_seeds_per_item():
    assert GenerationRequest(seed=7, batch_size=3).item_seeds() == [7, 8, 9]
    assert GenerationRequest(seed=None).item_seeds() is None
    assert GenerationRequest(seed=-1).item_seeds() is None
    assert GenerationRequest.from_dict({"seeds": [5, 1], "batch_size": 2}).item_seeds() == [5, 1]
    with pytest.raises(RequestError):
        GenerationRequest.from_dict({"seeds": [5], "batch_size": 2})


def test_timesignature_forms():
    assert normalize_timesignature("3/4") == "3"
    assert normalize_timesignature("6") == "6"
    assert GenerationRequest.from_dict({"timesignature": 4}).timesignature == "4"
    assert GenerationRequest.from_dict({"timesignature": "3/4"}).timesignature == "3/4"


def test_round_trip_through_dict():
    req = GenerationRequest.from_dict({"caption": "dub techno", "bpm": 120, "keyscale": "A minor"})
    again = GenerationRequest.from_dict(req.to_dict())
    assert again == req


def test_top_level_help_lists_commands_and_launcher_options():
    from tests.cli_utils import run_cli

    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for word in ("render", "plan", "download", "make-tiny-checkpoints", "engine", "bridge", "gui",
                 "--engine-url", "--checkpoints", "--no-bridge"):
        assert word in out.stdout
    bad = run_cli("renderr")
    assert bad.returncode == 2 and "unknown command 'renderr'" in bad.stderr
