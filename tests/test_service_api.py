"""HTTP API: bad input of each kind, uploads, auth, and the engine CLI's bind check.

These need no model: a stand-in pipeline answers; bad requests never reach it.
"""

import io
import json
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from engine.service.app import create_app
from engine.service.cli import check_bind, is_loopback
from engine.service.core import EngineService
from simulators import wait_for
from simulators.pipelines import StandInPipeline
from tests.service_support import CLIENT_HEADERS, api_client, write_tone


@pytest.fixture
def service(tmp_path):
    svc = EngineService(StandInPipeline(steps=1), tmp_path / "results", max_upload_bytes=200_000,
                        log=lambda line: None)
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def client(service):
    with api_client(create_app(service)) as c:
        yield c


def _submit(client, request, **extra):
    return client.post("/v1/jobs", json={"request": request, **extra})


def test_malformed_json_is_400(client):
    response = client.post("/v1/jobs", content=b'{"request": {', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["detail"]


@pytest.mark.parametrize("request_body, field", [
    ({"caption": "x", "bpm": "fast"}, "bpm"),
    ({"caption": "x", "batch_size": 99}, "batch_size"),
    ({"caption": 5}, "caption"),
    ({"caption": "x", "thinking": "maybe"}, "thinking"),
    ({"caption": "x", "task_type": "remix"}, "task_type"),
    ({"caption": "x", "colour": "blue"}, "colour"),
    ({"task_type": "repaint"}, "src_audio"),
])
def test_wrong_types_and_values_are_422_naming_the_field(client, request_body, field):
    response = _submit(client, request_body)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field
    assert body["detail"].startswith(f"{field}:")


def test_wrong_envelope_fields_are_422(client):
    assert _submit(client, {"caption": "x"}, priority="now").json()["field"] == "priority"
    assert client.post("/v1/jobs", json={"request": "text"}).json()["field"] == "request"
    assert client.post("/v1/jobs", json=[1, 2]).status_code == 422
    assert client.post("/v1/jobs", json={"request": {}, "extra": 1}).json()["field"] == "extra"
    response = client.put("/v1/jobs/abc/autogen", json={"enabled": "perhaps"})
    assert response.status_code == 422 and response.json()["field"] == "enabled"


def test_unknown_ids_are_404(client):
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.delete("/v1/jobs/nope").status_code == 404
    assert client.get("/v1/jobs/nope/events").status_code == 404
    assert client.get("/v1/files/nope").status_code == 404
    assert client.put("/v1/jobs/nope/autogen", json={"enabled": True}).status_code == 404


def test_missing_file_id_in_request_is_422(client):
    response = _submit(client, {"task_type": "repaint", "src_audio": "file:" + "0" * 32})
    assert response.status_code == 422
    assert response.json()["field"] == "src_audio"
    assert "unknown file id" in response.json()["detail"]
    response = _submit(client, {"task_type": "cover", "src_audio": "/no/such/song.wav"})
    assert response.status_code == 422 and "outside the folders" in response.json()["detail"]


def test_upload_and_use_a_file(client, tmp_path):
    tone = write_tone(tmp_path / "tone.wav", seconds=1.0, sample_rate=16000)
    with open(tone, "rb") as fh:
        uploaded = client.post("/v1/files", files={"file": ("tone.wav", fh, "audio/wav")})
    assert uploaded.status_code == 200, uploaded.text
    meta = uploaded.json()
    assert meta["name"] == "tone.wav" and meta["size"] == (tmp_path / "tone.wav").stat().st_size
    assert client.get(f"/v1/files/{meta['id']}").content == (tmp_path / "tone.wav").read_bytes()
    response = _submit(client, {"task_type": "cover", "caption": "x", "duration": 1.0,
                                "src_audio": f"file:{meta['id']}"})
    assert response.status_code == 200, response.text


def test_corrupt_and_empty_uploads_are_rejected(client, service):
    response = client.post("/v1/files", files={"file": ("song.wav", b"RIFF\x00\x01garbage" * 10, "audio/wav")})
    assert response.status_code == 400
    assert "not a readable audio file" in response.json()["detail"]
    response = client.post("/v1/files", files={"file": ("empty.wav", b"", "audio/wav")})
    assert response.status_code == 400 and "empty" in response.json()["detail"]
    # nothing is left behind in the uploads folder
    assert list(service.store.uploads_dir.iterdir()) == []
    # names cannot escape the uploads folder
    response = client.post("/v1/files", files={"file": ("../../evil.wav", b"x", "audio/wav")})
    assert response.status_code == 400 and list(service.store.uploads_dir.iterdir()) == []


def test_oversize_upload_is_413(client, service):
    big = io.BytesIO(b"\x00" * (service.max_upload_bytes + 1000))
    response = client.post("/v1/files", files={"file": ("big.wav", big, "audio/wav")})
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    assert list(service.store.uploads_dir.iterdir()) == []


def test_multipart_job_with_source_file(client, tmp_path):
    tone = write_tone(tmp_path / "src.wav", seconds=1.0, sample_rate=16000)
    request = {"task_type": "repaint", "caption": "x", "duration": 1.0, "repainting_start": 0.2,
               "repainting_end": 0.6}
    with open(tone, "rb") as fh:
        response = client.post("/v1/jobs", data={"request": json.dumps(request), "priority": "background"},
                               files={"src_audio": ("src.wav", fh, "audio/wav")})
    assert response.status_code == 200, response.text
    job = client.get(f"/v1/jobs/{response.json()['id']}").json()
    assert job["priority"] == "background"
    assert job["request"]["src_audio"].startswith("file:")
    response = client.post("/v1/jobs", data={"request": "{not json"})
    assert response.status_code == 400 and response.json()["field"] == "request"
    with open(tone, "rb") as fh:
        response = client.post("/v1/jobs", data={"request": json.dumps(request)},
                               files={"src_audio": ("src.wav", b"not audio at all", "audio/wav")})
    assert response.status_code == 400 and response.json()["field"] == "src_audio"


def test_models_list_and_load(client, service):
    models = client.get("/v1/models").json()
    assert models["dit"] == "acestep-v15-turbo"
    assert models["data"]["default_model"] == "acestep-v15-turbo"
    loaded = client.post("/v1/models/load", json={"dit": "acestep-v15-base"}).json()
    assert loaded["dit"] == "acestep-v15-base" and service.pipeline.dit == "acestep-v15-base"
    assert client.post("/v1/models/load", json={"dit": 3}).status_code == 422
    assert client.post("/v1/models/load", json={"vae": "x"}).status_code == 422


def test_health_reports_device_memory_and_queue(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu"
    assert health["memory"]["rss_mib"] > 0
    assert set(health["queue"]) == {"interactive", "background", "running"}


def test_token_required_on_every_route_when_set(service):
    with TestClient(create_app(service, token="s3cret"), base_url="http://127.0.0.1", headers=CLIENT_HEADERS) as c:
        assert c.get("/health").status_code == 401
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/openapi.json").status_code == 401
        assert c.post("/release_task", json={"prompt": "x"}).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get("/health", headers=ok).json()["auth"] is True
        response = c.post("/v1/jobs", json={"request": {"caption": "x", "duration": 1.0}}, headers=ok)
        assert response.status_code == 200
        job_id = response.json()["id"]
        wait_for(lambda: c.get(f"/v1/jobs/{job_id}", headers=ok).json()["state"] == "done")
        # upstream clients may send the key in the body instead
        assert c.post("/release_task", json={"prompt": "x", "ai_token": "s3cret"}).status_code == 200
        assert c.post("/release_task", json={"prompt": "x", "ai_token": "nope"}).status_code == 401


def test_cors_only_for_allowed_origins(service):
    app = create_app(service, token="t", allow_origins=["http://localhost:5173"])
    with TestClient(app, base_url="http://127.0.0.1", headers=CLIENT_HEADERS) as c:
        preflight = c.options("/release_task", headers={"Origin": "http://localhost:5173",
                                                        "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
        other = c.get("/health", headers={"Origin": "http://evil.example", "Authorization": "Bearer t"})
        assert "access-control-allow-origin" not in other.headers
    with api_client(create_app(service)) as c:
        response = c.get("/health", headers={"Origin": "http://localhost:5173"})
        assert "access-control-allow-origin" not in response.headers


def test_no_token_means_open_on_loopback(client):
    assert client.get("/health").json()["auth"] is False
    assert client.get("/openapi.json").status_code == 200


def test_bind_check():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    assert check_bind("127.0.0.1", None) is None
    assert check_bind("0.0.0.0", "t") is None
    assert "refusing" in check_bind("0.0.0.0", None)


def test_engine_cli_refuses_non_loopback_without_token(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-m", "engine.service", "--host", "0.0.0.0",
                             "--results", str(tmp_path / "r")], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr
