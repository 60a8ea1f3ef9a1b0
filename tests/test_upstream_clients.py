"""ACE-Step-DAW and the acestep VST3 plugin against the engine, unchanged.

The requests are the ones recorded from each client's source in tests/data/upstream_clients/
(field names, multipart parts, polling); the answers are read the way each client reads them
(the `VstClient` / `DawClient` below follow PluginBackendClient.cpp and aceStepApi.ts /
generationPipeline.ts / modelStore.ts). The engine runs in-process on the tiny parity checkpoints.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from engine.pipeline import Pipeline
from engine.service.app import create_app
from engine.service.core import EngineService
from simulators import wait_for
from tests.lm_utils import one_torch_thread  # noqa: F401 (autouse fixture)
from tests.service_support import write_tone

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "upstream_clients"
VST = json.loads((RECORDED / "acestep_vst3.json").read_text())
DAW = json.loads((RECORDED / "ace_step_daw.json").read_text())
TURBO, BASE, LM = "acestep-v15-turbo", "acestep-v15-base", "acestep-5Hz-lm-0.6B"


# ---------------------------------------------------------------- engine on tiny checkpoints
def _checkpoints(root: Path, with_lm: bool) -> Path:
    root.mkdir()
    for folder in (DATA / "parity" / "checkpoints").iterdir():
        (root / folder.name).symlink_to(folder.resolve())
    if with_lm:
        (root / LM).symlink_to((DATA / "parity-lm" / "checkpoints" / LM).resolve())
    return root


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    root = _checkpoints(tmp_path_factory.mktemp("clients") / "checkpoints", with_lm=True)
    pipeline = Pipeline.from_checkpoints(root, dit=TURBO, device="cpu")
    # Sources stay at 1 s (the tiny VAE encoder is slow on CPU), so the repaint region is 0.5 s,
    # under the 3 s minimum real requests must meet.
    pipeline.enforce_region_limits = False
    return pipeline


@pytest.fixture(scope="module")
def no_lm_pipeline(tiny_pipeline, tmp_path_factory):
    """The same loaded models over a checkpoints folder that holds no LM."""
    root = _checkpoints(tmp_path_factory.mktemp("clients_no_lm") / "checkpoints", with_lm=False)
    p = tiny_pipeline
    pipeline = Pipeline(root, p.dit, p.dit_name, p.text_encoder, p.vae, p.device, p.dtype)
    pipeline.enforce_region_limits = False
    return pipeline


class PausingPipeline:
    """The real pipeline; a job stops at each stage named in `pause_at` ("load_lm", or halfway
    through "diffusion") until the test releases it, so a test can look at a running job without
    racing it. `stops` hands the test (stage, release event) pairs."""

    def __init__(self, pipeline):
        self._pipeline = pipeline
        self.pause_at: set[str] = set()
        self.stops: queue.Queue[tuple[str, threading.Event]] = queue.Queue()

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def _hold(self, stage: str) -> None:
        if stage in self.pause_at:
            self.pause_at.discard(stage)
            release = threading.Event()
            self.stops.put((stage, release))
            release.wait(120)

    def next_stop(self) -> tuple[str, threading.Event]:
        return self.stops.get(timeout=120)

    def release_all(self) -> None:
        self.pause_at.clear()
        while not self.stops.empty():
            self.stops.get_nowait()[1].set()

    def load_lm(self, name):
        self._hold("load_lm")
        self._pipeline.load_lm(name)

    def generate(self, request, progress=None, cancel=None, dump=False):
        def forward(event):
            progress(event)
            if event.stage == "diffusion" and 2 * event.step >= event.total:
                self._hold("diffusion")

        return self._pipeline.generate(request, progress=forward, cancel=cancel, dump=dump)


class Engine:
    def __init__(self, pipeline, results: Path, allowed_roots=()):
        pipeline.load_lm(None)
        pipeline.load_dit(TURBO)  # every test starts from the engine's start-up state
        self.pipeline = PausingPipeline(pipeline)
        self.service = EngineService(self.pipeline, results, log=lambda line: None, allowed_roots=allowed_roots)
        # Both clients reach the engine as localhost:8001 (the VST3 plugin's URL setting, the DAW's proxy).
        self.http = TestClient(create_app(self.service), base_url="http://localhost:8001")

    def __enter__(self):
        self.service.start()
        self.http.__enter__()
        return self

    def __exit__(self, *exc):
        self.pipeline.release_all()
        self.http.__exit__(*exc)
        self.service.stop()


@pytest.fixture
def engine(tiny_pipeline, tmp_path):
    # The VST3 plugin sends paths of files on the engine's machine: the musician lets the engine read
    # their takes folder with --allow-path (here: the test's folder).
    (tmp_path / "takes").mkdir()
    with Engine(tiny_pipeline, tmp_path / "results", allowed_roots=[tmp_path / "takes"]) as running:
        yield running


# ---------------------------------------------------------------- the VST3 plugin's client
class VstClient:
    """PluginBackendClient.cpp: JSON bodies, answers read through `code` / `data` / `error`."""

    def __init__(self, http: TestClient):
        self.http = http

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[dict | None, str]:
        """readJsonResponse: (parsed root object, "") or (None, the message the plugin shows)."""
        if body is None:
            response = self.http.request(method, path)
        else:
            response = self.http.request(method, path, content=json.dumps(body),
                                         headers={"Content-Type": "application/json"})
        try:
            parsed = response.json()
        except ValueError:
            return None, "Backend returned invalid JSON."
        if not isinstance(parsed, dict):
            return None, "Backend returned an unexpected response shape."
        if response.status_code != 200:
            return None, parsed.get("error") or f"Backend request failed with HTTP {response.status_code}."
        return parsed, ""

    @staticmethod
    def _data(root: dict) -> dict | None:
        """getWrappedDataObject: `data` only when `code` is 200."""
        data = root.get("data")
        return data if root.get("code") == 200 and isinstance(data, dict) else None

    def check_health(self) -> str:
        root, error = self._request("GET", "/health")
        assert not error, error
        return "ready" if (root.get("data") or {}).get("status") == "ok" else "degraded"

    def lora_status(self) -> dict:
        root, error = self._request("GET", "/v1/lora/status")
        assert not error, error
        data = self._data(root)
        assert data is not None, "Backend did not return LoRA status data."
        return {"loaded": bool(data["lora_loaded"]), "use_lora": bool(data["use_lora"]),
                "scale": float(data["lora_scale"]), "active_adapter": data.get("active_adapter"),
                "adapters": [str(a) for a in data.get("adapters") or [] if a]}

    def start_generation_raw(self, body: dict) -> tuple[str | None, str]:
        """startGeneration: the task id, or None and the message the plugin shows."""
        root, error = self._request("POST", "/release_task", body)
        data = self._data(root) if not error else None
        return (str(data["task_id"]) if data and data.get("task_id") else None), error

    def start_generation(self, body: dict) -> str:
        task_id, error = self.start_generation_raw(body)
        assert not error and task_id, error
        return task_id

    def poll(self, task_id: str) -> dict:
        """pollGeneration: status, progressText, errorMessage and result slots."""
        root, error = self._request("POST", "/query_result", {"task_id_list": [task_id]})
        assert not error, error
        task = root["data"][0]
        status, text = int(task["status"]), str(task.get("progress_text") or "")
        if status == 0:
            return {"status": "running", "progress_text": text or "Queued / Running"}
        items = json.loads(task["result"])
        if not isinstance(items, list) or not items:
            return {"status": "succeeded" if status == 1 else "failed", "progress_text": text,
                    "error": "Task finished without any audio file." if status == 1 else "Task failed."}
        if status == 2:
            return {"status": "failed", "progress_text": text, "error": str(items[0].get("error") or "Task failed.")}
        slots = []
        for index, item in enumerate(items[:3]):
            prompt = str(item.get("prompt", "")).strip()
            metas = item.get("metas") or {}
            suffix = ", ".join(part for part in (f"{metas['duration']}s" if metas.get("duration") else "",
                                                 str(metas.get("keyscale") or "")) if part)
            label = f"Result {index + 1} - {prompt[:28] if prompt else 'Untitled prompt'}"
            slots.append({"url": item.get("url") or item.get("file"), "label": f"{label} ({suffix})" if suffix
                          else label, "duration": metas.get("duration")})
        return {"status": "succeeded", "progress_text": text, "slots": slots}

    def wait(self, task_id: str) -> dict:
        return wait_for(lambda: (answer := self.poll(task_id))["status"] != "running" and answer, timeout=300,
                        interval=0.1)

    def download(self, url: str) -> bytes:
        response = self.http.get(url)
        assert response.status_code == 200, "Could not download the generated preview audio."
        return response.content


# ---------------------------------------------------------------- ACE-Step-DAW's client
class GenerationFailed(Exception):
    pass


DAW_PAGE = "http://127.0.0.1:5174"  # vite.config.ts: the dev server, which proxies /api to the engine


class DawClient:
    """aceStepApi.ts (fetch + envelope.data), generationPipeline.ts (multipart, polling), modelStore.ts."""

    # The page at the Vite dev server posts through its proxy: the browser adds these to every POST.
    BROWSER_POST_HEADERS = {"Origin": DAW_PAGE, "Sec-Fetch-Site": "same-origin"}

    def __init__(self, http: TestClient):
        self.http = http

    def list_models(self) -> dict:
        response = self.http.get("/v1/model_inventory")
        if response.status_code != 200:
            response = self.http.get("/v1/models")
        assert response.status_code == 200, f"listModels failed: {response.status_code}"
        data = response.json()["data"]
        return {"models": list(data["models"]), "default_model": data.get("default_model"),
                "lm_models": list(data["lm_models"]), "loaded_lm_model": data.get("loaded_lm_model"),
                "llm_initialized": bool(data.get("llm_initialized"))}

    def init_model(self, body: dict):
        response = self.http.post("/v1/init", json=body, headers=self.BROWSER_POST_HEADERS)
        assert response.status_code == 200, f"initModel failed: {response.status_code} - {response.text}"
        return response.json()

    def get_stats(self) -> dict:
        response = self.http.get("/v1/stats")
        assert response.status_code == 200, f"getStats failed: {response.status_code}"
        stats = response.json()["data"]
        # ModelLibraryPanel.tsx shows `${queue_size}/${queue_maxsize}` and avg_job_seconds.toFixed(1)
        return {"queue": f"{stats['queue_size']}/{stats['queue_maxsize']}",
                "avg": f"{float(stats['avg_job_seconds']):.1f}s", "jobs": stats["jobs"]}

    def release_task(self, recorded: dict, src_audio: bytes) -> str:
        """releaseTask: the src_audio blob, then every non-null parameter as String(value)."""
        filename = recorded["files"]["src_audio"]["filename"]
        response = self.http.post("/release_task", data=dict(recorded["fields"]),
                                  files={"src_audio": (filename, src_audio, "audio/wav")},
                                  headers=self.BROWSER_POST_HEADERS)
        assert response.status_code == 200, f"releaseLegoTask failed: {response.status_code} - {response.text}"
        return response.json()["data"]["task_id"]

    def query(self, task_id: str) -> dict:
        response = self.http.post("/query_result", json={"task_id_list": [task_id]},
                                  headers=self.BROWSER_POST_HEADERS)
        assert response.status_code == 200, f"queryResult failed: {response.status_code}"
        return response.json()["data"][0]

    @staticmethod
    def progress_of(entry: dict) -> tuple[str | None, float | None]:
        """extractProgressMetadata: stage and progress of result[0] when result is a JSON list."""
        raw = (entry.get("result") or "").strip()
        if not raw.startswith("["):
            return None, None
        first = (json.loads(raw) or [None])[0] or {}
        progress = first.get("progress")
        return (str(first.get("stage") or "").strip() or None,
                progress if isinstance(progress, (int, float)) and not isinstance(progress, bool) else None)

    def wait(self, task_id: str) -> dict:
        """The polling loop: result[0] when status is 1, 'Generation failed: <result>' when 2."""
        entry = wait_for(lambda: (e := self.query(task_id))["status"] != 0 and e, timeout=300, interval=0.1)
        if entry["status"] == 2:
            raise GenerationFailed(f"Generation failed: {entry['result']}")
        return json.loads(entry["result"])[0]

    def download_audio(self, path: str) -> bytes:
        url = path if path.startswith("/v1/") else "/v1/audio?path=" + path
        response = self.http.get(url)
        assert response.status_code == 200, f"downloadAudio failed: {response.status_code}"
        return response.content


def silence_wav(seconds: float = 0.1, rate: int = 16000) -> bytes:
    """silenceGenerator.ts's placeholder: mono 16-bit PCM zeros."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\0\0" * int(np.ceil(seconds * rate)))
    return out.getvalue()


def tone_wav(tmp_path: Path, seconds: float) -> bytes:
    return Path(write_tone(tmp_path / f"tone{seconds}.wav", seconds=seconds)).read_bytes()


def seconds_of(audio: bytes) -> float:
    info = soundfile.info(io.BytesIO(audio))
    return info.frames / info.samplerate


# ---------------------------------------------------------------- the VST3 plugin
def test_vst_idle_polling_health_and_lora_status(engine):
    vst = VstClient(engine.http)
    assert [poll["path"] for poll in VST["idle_polling"]] == ["/health", "/v1/lora/status"]
    assert vst.check_health() == "ready"
    status = vst.lora_status()  # was a 404 ("Backend request failed with HTTP 404.")
    assert status == {"loaded": False, "use_lora": False, "scale": 1.0, "active_adapter": None, "adapters": []}


def test_vst_text2music_then_cover_of_a_local_file(engine, tmp_path):
    vst = VstClient(engine.http)
    task_id = vst.start_generation(VST["requests"]["text2music"]["body"])
    answer = vst.wait(task_id)
    assert answer["status"] == "succeeded", answer
    assert answer["progress_text"].startswith("done")
    slot = answer["slots"][0]
    audio = vst.download(slot["url"])
    assert seconds_of(audio) == pytest.approx(10.0)
    assert slot["label"].startswith("Result 1 - warm lo-fi piano loop (10s")

    outside = write_tone(tmp_path / "elsewhere.wav", seconds=1.0)
    body = dict(VST["requests"]["cover"]["body"], src_audio_path=outside)
    task_id, error = vst.start_generation_raw(body)
    assert task_id is None and "--allow-path" in error  # the plugin shows why, and the fix

    source = write_tone(tmp_path / "takes" / "take.wav", seconds=1.0)  # shorter than the 10 s asked for
    body = dict(VST["requests"]["cover"]["body"], src_audio_path=source)
    answer = vst.wait(vst.start_generation(body))
    assert answer["status"] == "succeeded", answer
    slot = answer["slots"][0]
    length = seconds_of(vst.download(slot["url"]))
    assert slot["duration"] == pytest.approx(length, abs=0.01)  # the label shows the real length
    assert f"({slot['duration']}s" in slot["label"]


def test_vst_failed_job_shows_the_engines_message(engine, tmp_path):
    vst = VstClient(engine.http)
    silent = tmp_path / "takes" / "silent.wav"
    soundfile.write(str(silent), np.zeros((48000, 2), np.float32), 48000)
    body = dict(VST["requests"]["cover"]["body"], src_audio_path=str(silent))  # nothing to cover
    answer = vst.wait(vst.start_generation(body))
    assert answer["status"] == "failed"
    assert "silent" in answer["error"] and answer["error"] != "Task failed."
    assert answer["progress_text"] == answer["error"]


def test_vst_request_errors_carry_an_error_field(engine):
    vst = VstClient(engine.http)
    root, error = vst._request("POST", "/release_task", dict(VST["requests"]["text2music"]["body"],
                                                             task_type="remix"))
    assert root is None and error.startswith("task_type:")


# ---------------------------------------------------------------- ACE-Step-DAW
def test_daw_model_panel_stats_and_model_switch(engine):
    daw = DawClient(engine.http)
    inventory = daw.list_models()
    assert {m["name"] for m in inventory["models"]} == {TURBO, BASE}
    turbo = next(m for m in inventory["models"] if m["name"] == TURBO)
    assert turbo["is_loaded"] and turbo["is_default"] and turbo["supported_task_types"] == ["text2music", "repaint",
                                                                                             "cover"]
    assert "lego" in next(m for m in inventory["models"] if m["name"] == BASE)["supported_task_types"]
    assert inventory["lm_models"] == [{"name": LM, "is_loaded": False}] and not inventory["llm_initialized"]
    assert daw.get_stats() == {"queue": "0/200", "avg": "5.0s", "jobs": daw.get_stats()["jobs"]}

    switched = daw.init_model(DAW["model_switch"]["body"])
    assert switched["code"] == 200 and switched["data"]["loaded_model"] == BASE
    inventory = daw.list_models()
    assert inventory["default_model"] == BASE
    assert [m["name"] for m in inventory["models"] if m["is_loaded"]] == [BASE]

    # ensureModelForIntent('full-song'): an LM is listed and none is loaded -> init_llm
    answer = daw.init_model(DAW["lm_switch"]["body"])
    assert answer["code"] == 200 and answer["data"]["loaded_lm_model"] == LM and answer["data"]["llm_initialized"]
    assert daw.list_models()["lm_models"] == [{"name": LM, "is_loaded": True}]

    refused = daw.init_model({"model": BASE, "slot": 2})  # one DiT at a time: said in the envelope
    assert refused["code"] == 400 and "Slot 2" in refused["error"] and refused["data"] is None
    failed = daw.init_model({"model": "acestep-v15-nope"})
    assert failed["code"] == 500 and failed["error"].startswith("Model initialization failed:")
    assert daw.list_models()["default_model"] == BASE


def test_daw_full_song_with_thinking_loads_the_lm_on_demand(engine):
    daw = DawClient(engine.http)
    engine.pipeline.pause_at = {"load_lm", "diffusion"}
    task_id = daw.release_task(DAW["requests"]["text2music"], silence_wav())
    stage, release = engine.pipeline.next_stop()
    assert stage == "load_lm"
    entry = daw.query(task_id)
    assert entry["status"] == 0 and daw.progress_of(entry) == ("load_lm", 0.0)
    assert entry["progress_text"].startswith("load_lm")
    release.set()

    stage, release = engine.pipeline.next_stop()
    assert stage == "diffusion"
    entry = daw.query(task_id)
    stage, progress = daw.progress_of(entry)
    assert entry["status"] == 0 and stage == "diffusion" and 0.35 < progress < 0.9
    assert entry["progress_text"].endswith(f"({round(progress * 100)}%)")
    release.set()

    first = daw.wait(task_id)
    assert first["stage"] == "succeeded" and first["progress"] == 1.0
    assert first["lm_model"] == LM and first["dit_model"] == TURBO  # model "" = the default model
    assert first["metas"]["duration"] == pytest.approx(seconds_of(daw.download_audio(first["file"])), abs=0.01)
    assert first["metas"]["bpm"] and first["metas"]["keyscale"]  # planned by the LM (DAW syncs them back)
    assert daw.list_models()["lm_models"] == [{"name": LM, "is_loaded": True}]
    assert isinstance(engine.http.get("/v1/stats").json()["data"]["avg_job_seconds"], float)


def test_daw_thinking_without_an_lm_checkpoint_fails_with_the_folder_and_the_fix(no_lm_pipeline, tmp_path):
    with Engine(no_lm_pipeline, tmp_path / "results") as running:
        daw = DawClient(running.http)
        assert daw.list_models()["lm_models"] == []  # so the DAW never calls init_llm
        task_id = daw.release_task(DAW["requests"]["text2music"], silence_wav())
        with pytest.raises(GenerationFailed) as failed:
            daw.wait(task_id)
        error = json.loads(daw.query(task_id)["result"])[0]["error"]
        assert LM in error and "ace-companion download --model 0.6B" in error
        assert error in str(failed.value)  # the DAW shows "Generation failed: [...]" with it
        assert VstClient(running.http).poll(task_id) == {"status": "failed", "progress_text": error, "error": error}
        assert daw.get_stats()["jobs"]["failed"] == 1


def test_daw_lego_on_silence_then_cover_and_repaint_on_the_default_model(engine, tmp_path):
    daw = DawClient(engine.http)
    lego = daw.wait(daw.release_task(DAW["requests"]["lego"], silence_wav()))  # an empty project: silence
    assert lego["dit_model"] == BASE
    assert lego["metas"]["duration"] == pytest.approx(seconds_of(daw.download_audio(lego["file"])), abs=0.01)

    # model "" after a job ran on another DiT: upstream uses the default model, not whatever is loaded
    cover = daw.wait(daw.release_task(DAW["requests"]["cover"], tone_wav(tmp_path, 1.0)))
    assert cover["dit_model"] == TURBO and cover["lm_model"] == ""  # thinking is not used by cover
    assert cover["metas"]["duration"] == pytest.approx(seconds_of(daw.download_audio(cover["file"])), abs=0.01)

    repaint = daw.wait(daw.release_task(DAW["requests"]["repaint"], tone_wav(tmp_path, 1.0)))
    assert repaint["dit_model"] == TURBO
    assert repaint["metas"]["duration"] == pytest.approx(seconds_of(daw.download_audio(repaint["file"])), abs=0.01)

    # a lego on the default (turbo) DiT fails, and says why, in result[0].error
    recorded = dict(DAW["requests"]["lego"], fields=dict(DAW["requests"]["lego"]["fields"], model=""))
    with pytest.raises(GenerationFailed, match="turbo model"):
        daw.wait(daw.release_task(recorded, silence_wav()))
    assert daw.get_stats()["jobs"]["succeeded"] == 3


def test_upstream_clients_find_the_engine_on_port_8001(tmp_path):
    from engine.client import DEFAULT_URL
    from engine.service.cli import DEFAULT_PORT
    from gui.settings import DEFAULT_ENGINE_URL, load_settings

    assert DEFAULT_PORT == 8001 and DEFAULT_URL.endswith(":8001") and DEFAULT_ENGINE_URL == DEFAULT_URL
    assert DAW["base_url_default"].endswith("http://127.0.0.1:8001)")  # the DAW's dev proxy target
    saved = tmp_path / "gui.json"
    saved.write_text(json.dumps({"engine_url": "http://127.0.0.1:8765"}))  # the engine's old default
    assert load_settings(saved).engine_url == DEFAULT_URL
    saved.write_text(json.dumps({"engine_url": "http://studio:8765"}))  # a chosen address stays
    assert load_settings(saved).engine_url == "http://studio:8765"
