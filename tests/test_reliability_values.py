"""Every bad numeric value is a 422 naming its field, over both APIs; never a 500, never accepted."""

import pytest

from engine.request import GenerationRequest, RequestError
from engine.service.app import create_app
from engine.service.core import EngineService
from simulators.pipelines import StandInPipeline
from tests.service_support import api_client

HUGE = "1" + "0" * 400          # 10^400 as a JSON integer
HUGER = "9" * 5000              # past Python's 4300-digit parsing limit

# (field, JSON text of the value)
BAD_VALUES = [
    ("duration", HUGE), ("duration", HUGER), ("duration", "1e400"), ("duration", "-1e400"),
    ("guidance_scale", HUGE), ("guidance_scale", "1e400"),
    ("normalization_db", '"abc"'), ("normalization_db", "1e308"), ("normalization_db", "NaN"),
    ("dcw_scaler", '"x"'), ("dcw_high_scaler", "NaN"), ("dcw_high_scaler", "Infinity"),
    ("bpm", '"120"'), ("bpm", HUGER), ("bpm", "1e400"), ("inference_steps", '"8"'), ("inference_steps", HUGE),
    ("seed", HUGE), ("seed", "-" + HUGE), ("batch_size", HUGER), ("shift", "true"), ("lm_top_k", "1.5"),
    ("repainting_start", "1e300"), ("lm_temperature", '"0.9"'), ("audio_cover_strength", "[1]"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    service = EngineService(StandInPipeline(steps=1), tmp_path_factory.mktemp("results"), log=lambda line: None)
    with api_client(create_app(service)) as c:
        yield c


@pytest.mark.parametrize("field, text", BAD_VALUES, ids=[f"{f}={t[:12]}" for f, t in BAD_VALUES])
def test_bad_numbers_are_422_naming_the_field(client, field, text):
    body = '{"request": {"caption": "x", "%s": %s}}' % (field, text)
    response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert len(response.text) < 1000  # a 5,000-digit value is described, not echoed


@pytest.mark.parametrize("name, text", [("audio_duration", HUGE), ("audio_duration", HUGER),
                                        ("guidance_scale", "1e400"), ("bpm", '"fast"'),
                                        ("inference_steps", '"1e999"'), ("audio_duration", '"nan"')])
def test_upstream_route_names_the_field_too(client, name, text):
    body = '{"prompt": "x", "%s": %s}' % (name, text)
    response = client.post("/release_task", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] in (name, {"audio_duration": "duration"}.get(name))


def test_upstream_forms_still_send_numbers_as_text(client):
    response = client.post("/release_task", data={"prompt": "x", "audio_duration": "12", "bpm": "120",
                                                  "guidance_scale": "7.5"})
    assert response.status_code == 200, response.text


def test_huge_ids_and_lists_are_not_server_errors(client):
    body = '{"task_id_list": [%s]}' % HUGER
    assert client.post("/query_result", content=body, headers={"content-type": "application/json"}).status_code == 422
    body = '{"task_id_list": "[%s]"}' % HUGER
    assert client.post("/query_result", content=body, headers={"content-type": "application/json"}).status_code < 500


def test_the_schema_itself_refuses_strings_for_numbers():
    for field, value in (("bpm", "120"), ("duration", "30"), ("seed", "7"), ("normalization_db", "-1")):
        with pytest.raises(RequestError) as caught:
            GenerationRequest.from_dict({"caption": "x", field: value})
        assert caught.value.field == field
    for field, value in (("normalization_db", -61.0), ("normalization_db", 0.5), ("dcw_scaler", 1.5),
                         ("dcw_high_scaler", -0.1), ("duration", 10 ** 400), ("repainting_end", 1e9)):
        with pytest.raises(RequestError) as caught:
            GenerationRequest.from_dict({"caption": "x", field: value})
        assert caught.value.field == field
    assert GenerationRequest.from_dict({"caption": "x", "bpm": 120.0, "normalization_db": -3}).bpm == 120
