"""Clean stops, honest disk errors and damaged job records: each failure names its cause, nothing is lost."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest

from engine.service.app import create_app
from engine.service.core import EngineService
from engine.service.store import JOBS_DIR
from engine.service.threaded import InProcessEngine
from simulators import wait_for
from simulators.pipelines import StandInPipeline
from tests.service_support import CLIENT_HEADERS, api_client

REQUEST = {"caption": "x", "duration": 1}


@pytest.fixture
def service(tmp_path):
    svc = EngineService(StandInPipeline(steps=1), tmp_path / "results", log=lambda line: None)
    svc.start()
    yield svc
    svc.stop()


def _run(service, request=REQUEST):
    job = service.submit(dict(request))
    return wait_for(lambda: (j := service.job_json(job.id))["state"] in ("done", "failed") and j)


def _files(service, job_id):
    folder = service.store.root / job_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------ disk
def test_full_results_folder_fails_the_job_with_the_free_space(service, monkeypatch):
    earlier = _run(service)
    assert earlier["state"] == "done"
    monkeypatch.setattr(service.store, "free_bytes", lambda: 5 * 1024 * 1024)
    job = _run(service)
    assert job["state"] == "failed"
    assert job["error"] == f"results folder full: 5 MB free at {service.store.root}"
    assert _files(service, job["id"]) == []
    assert os.path.isfile(earlier["results"][0]["path"])  # earlier results are untouched


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "results folder full: "),
                                           (errno.EROFS, "results folder is read-only: ")])
def test_write_error_mid_job_leaves_no_half_result(service, monkeypatch, code, message):
    import soundfile

    earlier = _run(service)
    real_write = soundfile.write
    calls = []

    def failing_write(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second item: after a part of it is on disk
            with open(path, "wb") as fh:
                fh.write(b"RIFF" + b"\0" * 100)
            raise OSError(code, os.strerror(code))
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(soundfile, "write", failing_write)
    job = _run(service, {**REQUEST, "batch_size": 2})
    assert job["state"] == "failed" and job["error"].startswith(message), job["error"]
    assert _files(service, job["id"]) == []  # neither the first item nor the half second one
    monkeypatch.setattr(soundfile, "write", real_write)
    assert os.path.isfile(earlier["results"][0]["path"])
    assert _run(service)["state"] == "done"  # the engine carries on once there is room


def test_libsndfile_system_error_is_named_as_a_full_folder(service, monkeypatch):
    import soundfile

    def system_error(path, *args, **kwargs):
        raise soundfile.LibsndfileError(2, "System error.")  # what libsndfile says on ENOSPC

    monkeypatch.setattr(soundfile, "write", system_error)
    monkeypatch.setattr(service.store, "free_bytes", lambda: 1024 * 1024)
    job = _run(service)
    assert job["error"] == f"results folder full: 1 MB free at {service.store.root}"


def test_health_reports_free_space(service):
    with api_client(create_app(service)) as client:
        disk = client.get("/health").json()["disk"]
    assert disk["path"] == str(service.store.root) and disk["writable"] is True
    assert isinstance(disk["free_mb"], float) and disk["free_mb"] > 0


# ------------------------------------------------------------------ damaged job records
def test_malformed_job_records_are_quarantined_and_the_engine_starts(tmp_path):
    results = tmp_path / "results"
    first = EngineService(StandInPipeline(steps=1), results, log=lambda line: None)
    first.start()
    good = _run(first)
    first.stop()
    record = json.loads((results / JOBS_DIR / f"{good['id']}.json").read_text())
    damaged = {
        "bad seq": {"seq": "seven"}, "null results": {"results": None}, "string created_at": {"created_at": "x"},
        "bool seq": {"seq": True}, "unknown priority": {"priority": "urgent", "state": "queued"},
        "list progress": {"progress": [1]}, "result not an object": {"results": [5]},
        "request missing": {"request": None},
    }
    names = {}
    for label, change in damaged.items():
        job_id = os.urandom(16).hex()
        broken = {**record, **change, "id": job_id}
        if change == {"request": None}:
            del broken["request"]
        (results / JOBS_DIR / f"{job_id}.json").write_text(json.dumps(broken))
        names[job_id] = label
    (results / JOBS_DIR / ("c" * 32 + ".json")).write_text("{not json")
    lines = []
    second = EngineService(StandInPipeline(steps=1), results, log=lines.append)
    second.start()
    try:
        assert second.job_json(good["id"])["state"] == "done"
        assert _run(second)["state"] == "done"
    finally:
        second.stop()
    quarantined = sorted(p.stem for p in (results / JOBS_DIR / "quarantine").iterdir())
    assert quarantined == sorted([*names, "c" * 32])
    assert sum("quarantined job file" in line for line in lines) == len(names) + 1


# ------------------------------------------------------------------ SIGTERM
_SERVER = """
import sys, threading
from engine.service.app import create_app
from engine.service.cli import serve
from engine.service.core import EngineService
from simulators.pipelines import StandInPipeline
service = EngineService(StandInPipeline(steps=1000, gate=threading.Event()), sys.argv[1])
service.start()
sys.exit(serve(create_app(service), service, "127.0.0.1", int(sys.argv[2])))
"""


def test_sigterm_puts_the_running_job_back_and_exits_0(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-c", _SERVER, str(tmp_path / "results"), str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(url + "/health", timeout=2).status_code == 200
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()
                return False

        wait_for(up, timeout=60, interval=0.1)
        job_id = httpx.post(url + "/v1/jobs", json={"request": REQUEST}).json()["id"]
        wait_for(lambda: httpx.get(f"{url}/v1/jobs/{job_id}").json()["state"] == "running", timeout=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stdout.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    record = json.loads((tmp_path / "results" / JOBS_DIR / f"{job_id}.json").read_text())
    assert record["state"] == "queued", record


def test_audio_bomb_upload_is_refused_from_its_header(service, tmp_path, monkeypatch):
    import soundfile

    import engine.audio_io as audio_io

    path = tmp_path / "bomb.flac"
    soundfile.write(path, np.zeros((9600, 8), np.float32), 96000, subtype="PCM_16")
    monkeypatch.setattr(audio_io, "MAX_DECODED_VALUES", 8 * 9600 - 1)
    with api_client(create_app(service)) as client:
        with open(path, "rb") as fh:
            response = client.post("/v1/files", files={"file": ("bomb.flac", fh, "audio/flac")})
    assert response.status_code == 400 and "8 channels" in response.json()["detail"]
    assert list(service.store.uploads_dir.iterdir()) == []


# ------------------------------------------------------------------ no starvation
class _SlowLoadPipeline(StandInPipeline):
    """Model switches wait on `release`, like a switch that waits for a long running job."""

    def __init__(self):
        super().__init__(steps=1)
        self.release = threading.Event()

    def load_dit(self, name):
        assert self.release.wait(60)
        self.dit = name


def test_long_waits_do_not_starve_health_and_polling(tmp_path):
    pipeline = _SlowLoadPipeline()
    waiting = 50  # more than anyio's shared pool of 40 threads
    answers = []
    try:
        with InProcessEngine(tmp_path / "results", pipeline) as server:
            def switch():
                with httpx.Client(base_url=server.url, headers=CLIENT_HEADERS, timeout=120) as http:
                    answers.append(http.post("/v1/models/load", json={"dit": "acestep-v15-base"}).status_code)

            threads = [threading.Thread(target=switch, daemon=True) for _ in range(waiting)]
            for thread in threads:
                thread.start()
            limiter = server.app.state.long_wait_limiter
            wait_for(lambda: limiter.borrowed_tokens + limiter.statistics().tasks_waiting == waiting, timeout=60)
            with httpx.Client(base_url=server.url, headers=CLIENT_HEADERS, timeout=10) as http:
                assert http.get("/health").json()["status"] == "ok"
                job_id = http.post("/v1/jobs", json={"request": REQUEST}).json()["id"]
                assert http.get(f"/v1/jobs/{job_id}").status_code == 200
                assert http.get("/v1/jobs").status_code == 200
            assert answers == []  # all switches were still waiting while the engine answered
            pipeline.release.set()
            for thread in threads:
                thread.join(60)
        assert answers == [200] * waiting
    finally:
        pipeline.release.set()
