"""Upstream ACE-Step 1.5 REST compatibility: /release_task, /query_result, /v1/audio, /v1/stats."""

import json
import threading
import urllib.parse

import pytest
import soundfile

from engine.request import RequestError
from engine.service import upstream
from engine.service.app import create_app
from engine.service.core import EngineService
from engine.service.upstream import normalize_keyscale, upstream_to_request
from simulators import wait_for
from simulators.pipelines import StandInPipeline
from tests.service_support import api_client, write_tone


@pytest.fixture
def client(tmp_path):
    service = EngineService(StandInPipeline(steps=1), tmp_path / "results", log=lambda line: None)
    service.start()
    with api_client(create_app(service)) as c:
        yield c
    service.stop()


def _query(client, task_id):
    response = client.post("/query_result", json={"task_id_list": [task_id]})
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200 and body["error"] is None
    return body["data"][0]


def test_release_task_and_query_result_round_trip(client):
    response = client.post("/release_task", json={
        "prompt": "upbeat pop song", "lyrics": "[Instrumental]", "audio_duration": 1.5, "key_scale": "Am",
        "time_signature": "4", "bpm": 120, "batch_size": 2, "use_random_seed": False, "seed": "11,12",
        "inference_steps": 8, "thinking": False, "audio_format": "mp3", "lm_model_path": "acestep-5Hz-lm-0.6B",
    })
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "queued" and data["queue_position"] >= 1
    task_id = data["task_id"]

    entry = wait_for(lambda: (e := _query(client, task_id))["status"] != 0 and e)
    assert entry["status"] == 1, entry
    results = json.loads(entry["result"])
    assert len(results) == 2
    assert results[0]["seed_value"] == "11,12"
    assert results[0]["prompt"] == "upbeat pop song"
    assert results[0]["metas"]["keyscale"] == "A minor" and results[0]["metas"]["bpm"] == 120
    assert results[0]["dit_model"] == "acestep-v15-turbo"

    audio = client.get(results[1]["file"])
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    job = client.get(f"/v1/jobs/{task_id}").json()
    assert job["request"]["audio_format"] == "wav" and job["request"]["seeds"] == [11, 12]
    local = job["results"][1]["path"]
    data, rate = soundfile.read(local)
    assert rate == 48000 and data.shape == (72000, 2)


def test_release_task_multipart_with_source_upload(client, tmp_path):
    tone = write_tone(tmp_path / "src.wav", seconds=2.0, sample_rate=16000)
    with open(tone, "rb") as fh:
        response = client.post("/release_task", data={
            "prompt": "remix", "task_type": "repaint", "repainting_start": "0.5", "repainting_end": "1.0",
            "audio_duration": "2", "thinking": "false", "use_random_seed": "true", "batch_size": "1",
        }, files={"src_audio": ("src.wav", fh, "audio/wav")})
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["task_id"]
    job = client.get(f"/v1/jobs/{task_id}").json()
    assert job["request"]["task_type"] == "repaint"
    assert job["request"]["src_audio"].startswith("file:")
    assert job["request"]["repainting_end"] == 1.0 and job["request"]["thinking"] is False
    wait_for(lambda: _query(client, task_id)["status"] == 1)


def test_query_result_accepts_a_json_string_and_reports_unknown_ids(client):
    response = client.post("/query_result", json={"task_id_list": json.dumps(["missing"])})
    entry = response.json()["data"][0]
    assert entry["status"] == 2 and "missing" in entry["error"]
    assert client.post("/query_result", json={"task_id_list": 5}).status_code == 422


def test_release_task_bad_input(client):
    response = client.post("/release_task", json={"prompt": "x", "task_type": "remix"})
    assert response.status_code == 422 and response.json()["field"] == "task_type"
    response = client.post("/release_task", json={"prompt": "x", "sample_query": "a love song"})
    assert response.status_code == 422 and response.json()["field"] == "sample_query"
    response = client.post("/release_task", content=b"{oops", headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_v1_audio_only_serves_results(client, tmp_path):
    outside = write_tone(tmp_path / "secret.wav")
    response = client.get("/v1/audio", params={"path": outside})
    assert response.status_code == 404
    response = client.get("/v1/audio?path=" + urllib.parse.quote("../../etc/passwd", safe=""))
    assert response.status_code == 404


def test_stats(client):
    stats = client.get("/v1/stats").json()["data"]
    assert stats["jobs"]["total"] == 0
    assert stats["avg_job_seconds"] == upstream.INITIAL_AVG_JOB_SECONDS and stats["queue_maxsize"] == 200


def test_full_queue_is_refused_and_cancelled_jobs_say_so(tmp_path, monkeypatch):
    gate = threading.Event()
    service = EngineService(StandInPipeline(steps=1, gate=gate), tmp_path / "results", log=lambda line: None)
    service.start()
    monkeypatch.setattr(upstream, "QUEUE_MAXSIZE", 1)
    try:
        with api_client(create_app(service)) as client:
            first = client.post("/release_task", json={"prompt": "a"}).json()["data"]["task_id"]
            wait_for(lambda: service.job_json(first)["state"] == "running")
            waiting = client.post("/release_task", json={"prompt": "b"}).json()["data"]["task_id"]
            entry = _query(client, waiting)
            assert entry["status"] == 0 and entry["progress_text"] == "queued (position 2)"
            assert json.loads(entry["result"])[0]["stage"] == "queued"
            full = client.post("/release_task", json={"prompt": "c"})
            assert full.status_code == 429 and "queue is full" in full.json()["error"]
            client.delete(f"/v1/jobs/{waiting}")
            entry = _query(client, waiting)
            assert entry["status"] == 2 and json.loads(entry["result"])[0]["error"] == "cancelled"
            assert entry["progress_text"] == "cancelled"
    finally:
        gate.set()
        service.stop()


def test_progress_fraction_and_text():
    running = {"state": "running", "results": [], "progress": {"stage": "diffusion", "step": 4, "total": 8}}
    assert upstream.progress_fraction("running", running["progress"]) == pytest.approx(0.625)
    assert upstream.progress_text(running) == "diffusion 4/8 (62%)"
    done = {"state": "done", "results": [{}], "progress": {"stage": "done", "step": 0, "total": 1}}
    assert upstream.progress_text(done) == "done: 1 file" and upstream.progress_fraction("done", {}) == 1.0
    failed = {"state": "failed", "error": "out of memory", "results": [], "progress": {"stage": "failed",
                                                                                       "total": 2}}
    assert upstream.progress_text(failed) == "out of memory"


def test_parameter_mapping():
    mapped = upstream_to_request({"caption": "c", "metas": {"bpm": 90, "keyscale": "F#m"},
                                  "constrained": "false", "model": "acestep-v15-base", "lm_top_k": None})
    assert mapped["bpm"] == 90 and mapped["keyscale"] == "F# minor"
    assert mapped["use_constrained_decoding"] is False and mapped["dit"] == "acestep-v15-base"
    assert mapped["batch_size"] == 2 and "seed" not in mapped
    with pytest.raises(RequestError) as info:
        upstream_to_request({"thinking": "sometimes"})
    assert info.value.field == "thinking"
    assert normalize_keyscale("C") == "C major" and normalize_keyscale("bb Minor") == "Bb minor"
