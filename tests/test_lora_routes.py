"""LoRA over HTTP: an engine on tiny XL checkpoints serves a LoRA job, and upstream's
`/v1/lora/*` routes (as acestep.vst3's LoRA panel calls them) and our `/v1/loras` report and change it."""

from __future__ import annotations

import json

import pytest

from engine.service.app import create_app
from engine.service.core import EngineService
from simulators import wait_for
from simulators.pipelines import StandInPipeline
from tests.service_support import api_client
from tests.test_parity_xl import XL_CASES, XL_CHECKPOINTS

NAME = "tiny-xl-turbo-lora"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from engine.pipeline import Pipeline

    pipeline = Pipeline.from_checkpoints(XL_CHECKPOINTS, dit="acestep-v15-xl-turbo", device="cpu")
    service = EngineService(pipeline, results_dir=tmp_path_factory.mktemp("results"), log=lambda line: None)
    with api_client(create_app(service)) as c:
        service.start()
        yield c
        service.stop()


def _job(client, **fields) -> dict:
    request = json.loads((XL_CASES / "t2m_xl_turbo_lyrics_metas.json").read_text(encoding="utf-8"))
    request = {k: v for k, v in request.items() if k not in ("name", "notes", "derived", "oracle", "tensors")}
    request.update(fields)
    job_id = client.post("/v1/jobs", json={"request": request}).json()["id"]
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["state"] in ("done", "failed"), timeout=120)
    return client.get(f"/v1/jobs/{job_id}").json()


def _status(client) -> dict:
    body = client.get("/v1/lora/status").json()
    assert body["code"] == 200 and body["error"] is None and isinstance(body["timestamp"], int)
    return body["data"]


def test_lora_job_then_status_reports_it(client):
    assert _status(client)["lora_loaded"] is False
    job = _job(client, lora=NAME, lora_scale=0.5)
    assert job["state"] == "done", job["error"]
    assert job["models"]["lora"] == NAME and job["models"]["lora_scale"] == 0.5
    status = _status(client)
    assert status["lora_loaded"] is True and status["adapters"] == [NAME] and status["adapter_type"] == "lora"
    assert status["last_used"] == {"adapter": NAME, "scale": 0.5}
    assert status["use_lora"] is False and status["active_adapter"] is None  # a job's own adapter is not the default
    health = client.get("/health").json()
    assert health["lora"]["last_used"]["adapter"] == NAME
    assert health["vram"]["offload"] is False and health["vram"]["reason"].startswith("cpu")


def test_upstream_load_scale_toggle_unload(client):
    body = client.post("/v1/lora/load", json={"lora_path": NAME}).json()
    assert body["code"] == 200 and body["data"]["lora_path"] == NAME and body["data"]["message"].startswith("\u2705")
    status = _status(client)
    assert status["use_lora"] is True and status["active_adapter"] == NAME and status["lora_scale"] == 1.0

    assert client.post("/v1/lora/scale", json={"scale": 0.5}).json()["data"]["scale"] == 0.5
    assert _status(client)["lora_scale"] == 0.5 and _status(client)["scales"] == {NAME: 0.5}
    job = _job(client)  # no lora field: the loaded default at its scale
    assert job["state"] == "done" and job["models"]["lora"] == NAME and job["models"]["lora_scale"] == 0.5

    assert client.post("/v1/lora/toggle", json={"use_lora": False}).json()["data"]["use_lora"] is False
    assert _status(client)["use_lora"] is False
    assert _job(client)["models"]["lora"] == ""
    client.post("/v1/lora/toggle", json={"use_lora": True})

    assert client.post("/v1/lora/unload").json()["code"] == 200
    assert _status(client)["lora_loaded"] is False and _status(client)["active_adapter"] is None
    assert _job(client)["models"]["lora"] == ""


def test_upstream_errors_keep_upstreams_shapes(client):
    missing = client.post("/v1/lora/load", json={"lora_path": "no-such-adapter"})
    assert missing.status_code == 400 and "no-such-adapter" in missing.json()["detail"]
    assert client.post("/v1/lora/scale", json={"scale": 1.5}).status_code == 422
    toggled = client.post("/v1/lora/toggle", json={"use_lora": True}).json()
    assert toggled["code"] == 400 and toggled["data"] is None and "no adapter" in toggled["error"]
    assert client.post("/v1/lora/unload").status_code == 400
    failed = _job(client, lora="no-such-adapter")
    assert failed["state"] == "failed" and "no-such-adapter" in failed["error"]


def test_our_lora_api(client):
    listed = client.get("/v1/loras").json()
    assert listed["available"] == [NAME] and listed["default"] is None
    chosen = client.put("/v1/loras/default", json={"name": NAME, "scale": 0.25}).json()
    assert chosen["default"] == NAME and chosen["scale"] == 0.25 and chosen["loaded"] == [NAME]
    assert client.put("/v1/loras/default", json={"name": NAME, "enabled": False}).json()["enabled"] is False
    bad = client.put("/v1/loras/default", json={"name": "nope"})
    assert bad.status_code == 422 and bad.json()["field"] == "name"
    assert client.delete("/v1/loras/nope").status_code == 404
    assert client.delete(f"/v1/loras/{NAME}").json()["loaded"] == []


def test_engine_without_lora_support(tmp_path):
    """A pipeline without adapters (a stand-in) still answers the VST's poll and refuses loads as upstream."""
    service = EngineService(StandInPipeline(), results_dir=tmp_path, log=lambda line: None)
    with api_client(create_app(service)) as c:
        assert c.get("/v1/lora/status").json()["data"]["lora_loaded"] is False
        response = c.post("/v1/lora/load", json={"lora_path": NAME})
    assert response.status_code == 400 and NAME in response.json()["error"]


def test_upstream_load_by_path_is_confined(client, tmp_path):
    """A path must lie in checkpoints/loras or an --allow-path folder; the answer never says more."""
    import shutil
    from pathlib import Path

    inside = (XL_CHECKPOINTS / "loras" / NAME).resolve()
    assert client.post("/v1/lora/load", json={"lora_path": str(inside)}).json()["code"] == 200
    outside = tmp_path / "elsewhere"
    shutil.copytree(inside, outside)
    for value in (str(outside), "../loras/" + NAME, str(tmp_path / "missing")):
        refused = client.post("/v1/lora/load", json={"lora_path": value})
        assert refused.status_code == 400 and "--allow-path" in refused.json()["error"]
    service = client.app.state.service
    service.allowed_roots = [Path(str(tmp_path)).resolve()]
    try:
        loaded = client.post("/v1/lora/load", json={"lora_path": str(outside), "adapter_name": "mine"}).json()
        assert loaded["data"]["adapter_name"] == "mine" and _status(client)["active_adapter"] == "mine"
    finally:
        service.allowed_roots = []
        client.post("/v1/lora/unload")
