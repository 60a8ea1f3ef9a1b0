"""EngineClient against a real uvicorn server on 127.0.0.1 (stand-in pipeline), and its error mapping."""

import threading

import httpx
import pytest

from engine.client import EngineClient, EngineHTTPError, EngineUnavailable, _parse_sse
from engine.service.threaded import InProcessEngine
from simulators import wait_for
from simulators.pipelines import StandInPipeline
from tests.service_support import write_tone


@pytest.fixture
def live(tmp_path):
    gate = threading.Event()
    gate.set()
    pipeline = StandInPipeline(steps=5, step_s=0.01, gate=gate)
    with InProcessEngine(tmp_path / "results", pipeline, token="tok") as server:
        yield server, server.service, gate
        gate.set()


def test_sse_parser_handles_events_comments_and_multiline_data():
    lines = ["event: progress", "data: {\"a\":", "data: 1}", "", ": keepalive", "", "data: x", ""]
    assert list(_parse_sse(iter(lines))) == [("progress", "{\"a\":\n1}"), ("message", "x")]


def test_unreachable_engine_raises_engine_unavailable():
    client = EngineClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(EngineUnavailable, match="not reachable"):
        client.health()


def _release_when_watched(service, job_id, gate):
    """Let the stand-in run only once someone follows the job's events."""
    def release():
        wait_for(lambda: job_id in service._subscribers)
        gate.set()
    threading.Thread(target=release, daemon=True).start()


def test_client_round_trip(live, tmp_path):
    server, service, gate = live
    gate.clear()
    with EngineClient(server.url, token="tok") as client:
        assert client.health()["status"] == "ok"
        file_id = client.upload(write_tone(tmp_path / "ref.wav"))
        job_id = client.submit({"caption": "client", "duration": 1.0, "seed": 3, "reference_audio": f"file:{file_id}"})
        _release_when_watched(service, job_id, gate)
        seen = []
        job = client.wait(job_id, timeout=60, on_progress=seen.append)
        assert job["state"] == "done"
        steps = [e["progress"]["step"] for e in seen if e.get("event") == "progress"]
        assert steps == sorted(steps) and steps[-1] == 5
        assert seen[-1]["event"] == "state"
        dest = client.download(job["results"][0]["file_id"], tmp_path / "out.wav")
        assert (tmp_path / "out.wav").stat().st_size > 1000 and dest.endswith("out.wav")
        client.download(job["results"][0]["url"], tmp_path / "out2.wav")
        assert (tmp_path / "out2.wav").read_bytes() == (tmp_path / "out.wav").read_bytes()
        assert [j["id"] for j in client.jobs()] == [job_id]
        assert client.models()["dit"] == "acestep-v15-turbo"
        assert client.load_models(lm="0.6B")["lm"] == "0.6B"
        assert client.load_models(lm=None)["lm"] is None


def test_client_errors_carry_status_and_message(live, tmp_path):
    server, _, _ = live
    with EngineClient(server.url, token="tok") as client:
        with pytest.raises(EngineHTTPError) as info:
            client.submit({"caption": "x", "bpm": 1000})
        assert info.value.status == 422 and "bpm" in info.value.message
        with pytest.raises(EngineHTTPError) as info:
            client.job("unknown")
        assert info.value.status == 404
        with pytest.raises(EngineHTTPError) as info:
            client.download("0" * 32, tmp_path / "never.wav")
        assert info.value.status == 404 and not (tmp_path / "never.wav").exists()
    with EngineClient(server.url, token="wrong") as client:
        with pytest.raises(EngineHTTPError) as info:
            client.health()
        assert info.value.status == 401


def test_client_cancel_and_autogen(live):
    server, service, gate = live
    gate.clear()
    with EngineClient(server.url, token="tok") as client:
        running = client.submit({"caption": "a", "duration": 1.0})
        wait_for(lambda: client.job(running)["state"] == "running")
        queued = client.submit({"caption": "b", "duration": 1.0}, priority="background", autogen=True)
        assert client.job(queued)["autogen"] is True
        assert client.set_autogen(queued, False)["autogen"] is False
        assert client.cancel(queued)["state"] == "cancelled"
        client.cancel(running)
        assert client.wait(running, timeout=30)["state"] == "cancelled"


def test_wait_times_out(live):
    server, _, gate = live
    gate.clear()
    with EngineClient(server.url, token="tok") as client:
        job_id = client.submit({"caption": "slow", "duration": 1.0})
        with pytest.raises(TimeoutError):
            client.wait(job_id, timeout=0.5)
        client.cancel(job_id)


def test_events_of_unknown_job_is_http_error(live):
    server, _, _ = live
    with EngineClient(server.url, token="tok") as client:
        with pytest.raises(EngineHTTPError) as info:
            list(client.events("nope"))
        assert info.value.status == 404
    assert httpx.get(server.url + "/health").status_code == 401
