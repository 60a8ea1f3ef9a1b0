"""The engine service with the real pipeline on the tiny parity checkpoints.

Lifecycle (submit, watch, download), progress events in order, cancel of a running job,
restart recovery, simulated out-of-memory and model-load failures.
"""

import json
import os
import shutil
import threading

import pytest
import soundfile

from engine.service.app import create_app
from engine.service.core import RESTARTED_MESSAGE, EngineService
from simulators import wait_for
from tests.conftest import PARITY
from tests.service_support import api_client, write_tone

REQUEST = {"task_type": "text2music", "caption": "dusty boom bap drums with warm rhodes", "duration": 5.2,
           "bpm": 90, "inference_steps": 8, "seed": 42}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, parity_checkpoints):
    """The parity checkpoints plus a DiT folder whose weights are truncated (for the session
    pipeline, see the model-load test, and for the engine process)."""
    root = tmp_path_factory.mktemp("checkpoints")
    for entry in os.listdir(parity_checkpoints):
        os.symlink(parity_checkpoints / entry, root / entry)
    broken = root / "acestep-v15-broken"
    broken.mkdir()
    turbo = parity_checkpoints / "acestep-v15-turbo"
    shutil.copy(turbo / "config.json", broken / "config.json")
    shutil.copy(turbo / "silence_latent.pt", broken / "silence_latent.pt")
    with open(turbo / "model.safetensors", "rb") as src, open(broken / "model.safetensors", "wb") as dst:
        dst.write(src.read(4096))
    return root


@pytest.fixture
def service(pipeline, tmp_path):
    svc = EngineService(pipeline, tmp_path / "results", log=lambda line: None)
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def client(service):
    with api_client(create_app(service)) as c:
        yield c


def _wait_final(client, job_id, timeout=120):
    return wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["state"] in
                    ("done", "failed", "cancelled") and j, timeout=timeout)


def _finish(client, request):
    """Submit `request` and wait for the job's final state."""
    return _wait_final(client, client.post("/v1/jobs", json={"request": request}).json()["id"])


def test_lifecycle_submit_watch_download(client, service, tmp_path):
    response = client.post("/v1/jobs", json={"request": {**REQUEST, "batch_size": 2, "seeds": [5, 6]}})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]

    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    final = events[-1][1]
    assert events[-1][0] == "state" and final["state"] == "done", final["error"]
    # progress in order: stages never go back, diffusion steps count up to the total
    from engine.types import STAGES
    progress = [data["progress"] for kind, data in events if kind == "progress"]
    stage_index = [STAGES.index(p["stage"]) for p in progress if p["stage"] in STAGES]
    assert stage_index == sorted(stage_index)
    steps = [p["step"] for p in progress if p["stage"] == "diffusion"]
    assert steps == sorted(steps) and steps[-1] == progress[[p["stage"] for p in progress].index("diffusion")]["total"]
    assert steps[-1] == 8

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert [r["seed"] for r in job["results"]] == [5, 6]
    assert job["seeds"] == [5, 6] and job["started_at"] >= job["created_at"] and job["finished_at"]
    for result in job["results"]:
        audio = client.get(result["url"])
        assert audio.status_code == 200
        path = tmp_path / f"take{result['index']}.wav"
        path.write_bytes(audio.content)
        data, rate = soundfile.read(path)
        assert rate == 48000 and data.shape[1] == 2
        assert abs(data.shape[0] / 48000 - 5.2) < 0.05
        assert abs(result["duration"] - data.shape[0] / 48000) < 1e-3
        sidecar = json.loads(open(os.path.splitext(result["path"])[0] + ".json").read())
        assert sidecar["seed"] == result["seed"] and sidecar["request"]["caption"] == REQUEST["caption"]
        assert sidecar["models"]["dit"] == "acestep-v15-turbo" and "timings" in sidecar and "lm_plan" in sidecar


def test_flac_results(client):
    job_id = client.post("/v1/jobs", json={"request": {**REQUEST, "audio_format": "flac"}}).json()["id"]
    job = _wait_final(client, job_id)
    assert job["state"] == "done", job["error"]
    assert job["results"][0]["path"].endswith(".flac")
    assert soundfile.info(job["results"][0]["path"]).format == "FLAC"


def test_cancel_running_job_stops_within_one_step(client, service):
    seen = []
    original = service._on_progress

    def cancel_at_first_step(job, event):
        original(job, event)
        seen.append((event.stage, event.step))
        if event.stage == "diffusion" and event.step == 1:
            service.cancel(job.id)

    service._on_progress = cancel_at_first_step
    job_id = client.post("/v1/jobs", json={"request": REQUEST}).json()["id"]
    job = _wait_final(client, job_id)
    assert job["state"] == "cancelled"
    assert job["results"] == []
    diffusion_steps = [step for stage, step in seen if stage == "diffusion"]
    assert max(diffusion_steps) <= 2
    assert "decode" not in [stage for stage, _ in seen]
    # the engine carries on
    service._on_progress = original
    follow = client.post("/v1/jobs", json={"request": REQUEST}).json()["id"]
    assert _wait_final(client, follow)["state"] == "done"


def test_out_of_memory_fails_only_that_job(client, service, pipeline, monkeypatch):
    import torch

    real_generate = pipeline.generate

    def oom(request, progress=None, cancel=None, dump=False):
        if request.caption == "too big":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if request.caption == "too big for ram":
            raise MemoryError()
        return real_generate(request, progress=progress, cancel=cancel, dump=dump)

    monkeypatch.setattr(pipeline, "generate", oom)
    for caption in ("too big", "too big for ram"):
        job = _finish(client, {**REQUEST, "caption": caption})
        assert job["state"] == "failed" and job["error"].startswith("out of memory")
    job = _wait_final(client, client.post("/v1/jobs", json={"request": REQUEST}).json()["id"])
    assert job["state"] == "done"
    assert client.get("/health").json()["status"] == "ok"


def test_model_that_fails_to_load_fails_the_job_not_the_engine(client, pipeline, checkpoints, monkeypatch):
    monkeypatch.setattr(pipeline, "root", checkpoints)  # DiT folders come from the root with the broken one
    job = _finish(client, {**REQUEST, "dit": "acestep-v15-broken"})
    assert job["state"] == "failed"
    assert "acestep-v15-broken" in job["error"] or "model.safetensors" in job["error"]
    missing = _finish(client, {**REQUEST, "dit": "acestep-v15-nope"})
    assert missing["state"] == "failed" and missing["error"]

    response = client.post("/v1/models/load", json={"dit": "acestep-v15-broken"})
    assert response.status_code == 400 and response.json()["detail"]
    job = _finish(client, {**REQUEST, "dit": "acestep-v15-turbo"})
    assert job["state"] == "done", job["error"]


def test_uploaded_source_is_used_and_a_corrupt_one_fails_the_job(client, service, tmp_path):
    source = PARITY / "cases" / "audio" / "source.wav"  # audio the session pipeline already knows
    with open(source, "rb") as fh:
        file_id = client.post("/v1/files", files={"file": ("src.wav", fh, "audio/wav")}).json()["id"]
    request = {**REQUEST, "task_type": "repaint", "src_audio": f"file:{file_id}", "repainting_start": 1.0,
               "repainting_end": 4.0, "duration": 6.0}
    good = _wait_final(client, client.post("/v1/jobs", json={"request": request}).json()["id"])
    assert good["state"] == "done", good["error"]
    assert abs(good["results"][0]["duration"] - soundfile.info(str(source)).duration) < 0.05
    # the upload was fine; the file is damaged on disk afterwards
    service.store.upload_path(file_id).write_bytes(b"RIFF....WAVEfmt garbage")
    job = _wait_final(client, client.post("/v1/jobs", json={"request": request}).json()["id"])
    assert job["state"] == "failed"
    assert "not a readable audio file" in job["error"] and "src.wav" in job["error"]
    assert _wait_final(client, client.post("/v1/jobs", json={"request": REQUEST}).json()["id"])["state"] == "done"


def test_restart_recovery(pipeline, tmp_path):
    results = tmp_path / "results"
    first = EngineService(pipeline, results, log=lambda line: None)
    first.start()
    done = first.submit(REQUEST)
    wait_for(lambda: first.get(done.id).state == "done", timeout=120)
    first.stop()

    # queue jobs without a worker, then leave the files as a crash in the middle of a job would
    second = EngineService(pipeline, results, log=lambda line: None)
    upload_path = second.store.new_upload_path("a" * 32, "src.wav")
    write_tone(upload_path, seconds=6.0)
    second.store.save_upload_meta("a" * 32, {"id": "a" * 32, "name": "src.wav", "file": "src.wav", "size": 1})
    queued = second.submit({**REQUEST, "caption": "still queued"})
    orphan = second.submit({**REQUEST, "task_type": "repaint", "src_audio": "file:" + "a" * 32,
                            "repainting_start": 1.0, "repainting_end": 4.0, "duration": 6.0})
    crashed = second.submit({**REQUEST, "caption": "was running"})
    record = json.loads((results / ".jobs" / f"{crashed.id}.json").read_text())
    record.update(state="running", started_at=record["created_at"])
    (results / ".jobs" / f"{crashed.id}.json").write_text(json.dumps(record))
    os.remove(upload_path)

    third = EngineService(pipeline, results, log=lambda line: None)
    assert third.get(done.id).state == "done"
    assert third.file_path(third.get(done.id).results[0]["file_id"]) is not None
    assert third.get(crashed.id).state == "failed" and third.get(crashed.id).error == RESTARTED_MESSAGE
    assert third.get(orphan.id).state == "failed" and "gone" in third.get(orphan.id).error
    assert third.get(queued.id).state == "queued"
    _start_and_finish(third, queued.id)


def _start_and_finish(service, job_id):
    service.start()
    try:
        wait_for(lambda: service.get(job_id).state == "done", timeout=120)
    finally:
        service.stop()


def test_clean_stop_puts_the_running_job_back_in_the_queue(pipeline, tmp_path):
    results = tmp_path / "results"
    service = EngineService(pipeline, results, log=lambda line: None)
    reached = threading.Event()
    original = service._on_progress

    def note(job, event):
        original(job, event)
        if event.stage == "diffusion" and event.step == 1:
            reached.set()
            wait_for(lambda: service._stopping)  # hold the step until stop() has been asked

    service._on_progress = note
    service.start()
    job = service.submit(REQUEST)
    assert reached.wait(120)
    service.stop()
    assert service.get(job.id).state == "queued"
    assert service.job_json(job.id)["queue_position"] == 1

    again = EngineService(pipeline, results, log=lambda line: None)
    assert again.get(job.id).state == "queued"
    _start_and_finish(again, job.id)


def test_disk_write_error_fails_the_job_not_the_engine(client, service, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(service.store, "write_result", full_disk)
    job = _wait_final(client, client.post("/v1/jobs", json={"request": REQUEST}).json()["id"])
    assert job["state"] == "failed" and job["error"].startswith("results folder full: ")
    monkeypatch.undo()
    assert _wait_final(client, client.post("/v1/jobs", json={"request": REQUEST}).json()["id"])["state"] == "done"


@pytest.mark.slow
def test_engine_command_serves_and_stops_cleanly(checkpoints, tmp_path):
    """`ace-companion engine` as a process: loads, serves a job with a token, stops on SIGINT."""
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from engine.client import EngineClient, EngineUnavailable

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.service", "--checkpoints", str(checkpoints), "--port", str(port),
         "--token", "tok", "--device", "cpu", "--results", str(tmp_path / "results")],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        client = EngineClient(f"http://127.0.0.1:{port}", token="tok", timeout=10)

        def healthy():
            try:
                return client.health()
            except EngineUnavailable:
                assert process.poll() is None, process.stderr.read()
                return None

        health = wait_for(healthy, timeout=120, interval=0.2)
        assert health["dit"] == "acestep-v15-turbo" and health["device"] == "cpu"
        job = client.wait(client.submit(REQUEST), timeout=120)
        assert job["state"] == "done", job["error"]
        assert Path(job["results"][0]["path"]).is_file()
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "loading models" in stderr and "serving http://127.0.0.1" in stderr


def test_cancel_queued_job_over_http(client, service):
    release = threading.Event()
    original = service._on_progress

    def hold_first_job(job, event):
        original(job, event)
        if job.request["caption"] == "first" and event.stage == "diffusion" and event.step == 1:
            assert release.wait(60)

    service._on_progress = hold_first_job
    first = client.post("/v1/jobs", json={"request": {**REQUEST, "caption": "first"}}).json()["id"]
    wait_for(lambda: client.get(f"/v1/jobs/{first}").json()["state"] == "running")
    queued = client.post("/v1/jobs", json={"request": {**REQUEST, "caption": "second"}}).json()["id"]
    assert client.get(f"/v1/jobs/{queued}").json()["queue_position"] == 2
    cancelled = client.delete(f"/v1/jobs/{queued}").json()
    assert cancelled["state"] == "cancelled" and cancelled["started_at"] is None
    release.set()
    assert _wait_final(client, first)["state"] == "done"
    assert client.get(f"/v1/jobs/{queued}").json()["results"] == []


def test_autogen_over_http(client):
    root = client.post("/v1/jobs", json={"request": REQUEST, "autogen": True}).json()["id"]

    def follow_up_done():
        job = client.get(f"/v1/jobs/{root}").json()
        if job["autogen_next"]:
            nxt = client.get(f"/v1/jobs/{job['autogen_next']}").json()
            return nxt["state"] == "done" and nxt
        return None

    second = wait_for(follow_up_done, timeout=120)
    assert second["priority"] == "background" and second["autogen_parent"] == root
    assert second["seeds"] != [REQUEST["seed"]]
    assert client.put(f"/v1/jobs/{root}/autogen", json={"enabled": False}).json()["autogen"] is False
    wait_for(lambda: client.get("/health").json()["queue"] == {"interactive": 0, "background": 0, "running": 0},
             timeout=120)
    jobs = client.get("/v1/jobs").json()["jobs"]
    assert not any(j["state"] in ("queued", "running") for j in jobs)
    assert not any(j["autogen"] for j in jobs)
