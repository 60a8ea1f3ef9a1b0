"""The engine's fast path through the HTTP API, on the tiny parity checkpoints.

A second repaint of the same upload encodes nothing and decodes only the region; a take the
engine made can be continued by its result id with only the new chunk coming back (at the host's
rate); a request that names no DiT runs on the engine's default; every finished job reports its
`work`; cancel lands between VAE tiles.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from engine.pipeline import Pipeline
from engine.request import GenerationRequest
from engine.service.app import create_app
from engine.service.core import EngineService
from engine.types import Cancelled
from engine.units import FRAMES_PER_S, HOP_SAMPLES, SAMPLE_RATE
from simulators import wait_for
from tests.service_support import api_client

SOURCE_S = 5.6
REGION = (1.0, 4.6)
BUCKET_FRAMES = FRAMES_PER_S  # one second of rounding
WORK_KEYS = {"encoded_frames", "decoded_frames", "dit_tokens", "dit_steps", "decoder_receptive_field", "cache"}


@pytest.fixture(scope="module")
def pipeline(parity_checkpoints):
    return Pipeline.from_checkpoints(parity_checkpoints, dit="acestep-v15-turbo", device="cpu")


@pytest.fixture(scope="module")
def client(pipeline, tmp_path_factory):
    service = EngineService(pipeline, tmp_path_factory.mktemp("results"), log=lambda line: None)
    service.start()
    with api_client(create_app(service)) as http:
        yield http
    service.stop()


@pytest.fixture(scope="module")
def upload_id(client, tmp_path_factory):
    t = np.arange(int(SOURCE_S * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 110 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)
    path = tmp_path_factory.mktemp("upload") / "context.wav"
    soundfile.write(str(path), np.stack([tone, 0.7 * tone], axis=1), SAMPLE_RATE, subtype="FLOAT")
    with open(path, "rb") as fh:
        return client.post("/v1/files", files={"file": ("context.wav", fh, "audio/wav")}).json()["id"]


def _run(client, request: dict) -> dict:
    response = client.post("/v1/jobs", json={"request": request})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    job = wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["state"] in
                   ("done", "failed", "cancelled") and j, timeout=600)
    assert job["state"] == "done", job["error"]
    assert set(job["work"]) == WORK_KEYS and set(job["work"]["cache"]) == {"source", "conditioning"}
    assert {"encode_audio", "encode_text", "diffusion", "decode", "postprocess"} <= set(job["timings"])
    return job


def _repaint(upload: str, seed: int, **extra) -> dict:
    return {"task_type": "repaint", "src_audio": f"file:{upload}", "caption": "warm rhodes", "seed": seed,
            "repainting_start": REGION[0], "repainting_end": REGION[1], "inference_steps": 2, **extra}


def test_second_repaint_of_an_upload_encodes_nothing_and_decodes_only_the_region(client, pipeline, upload_id):
    first = _run(client, _repaint(upload_id, 1))
    assert first["work"]["cache"]["source"] == "miss"
    assert first["work"]["encoded_frames"] == int(SOURCE_S * SAMPLE_RATE) // HOP_SAMPLES

    second = _run(client, _repaint(upload_id, 2))
    work = second["work"]
    assert work["cache"] == {"source": "hit", "conditioning": "hit"}
    assert work["encoded_frames"] == 0
    region_frames = int((REGION[1] - REGION[0]) * FRAMES_PER_S)
    assert work["decoder_receptive_field"] == pipeline.decoder_reach.frames > 0
    assert work["decoded_frames"] <= region_frames + 2 * work["decoder_receptive_field"] + BUCKET_FRAMES
    assert work["dit_steps"] == 2 and work["dit_tokens"] == -(-140 // 2)  # 140 latent frames, patch 2
    assert second["models"]["dit"] == "acestep-v15-turbo"

    # outside the region the take is the upload itself; the two takes differ inside it
    one, _ = soundfile.read(first["results"][0]["path"], dtype="float32", always_2d=True)
    two, _ = soundfile.read(second["results"][0]["path"], dtype="float32", always_2d=True)
    assert np.allclose(one[:SAMPLE_RATE // 2], two[:SAMPLE_RATE // 2])
    assert not np.allclose(one[2 * SAMPLE_RATE:4 * SAMPLE_RATE], two[2 * SAMPLE_RATE:4 * SAMPLE_RATE])


def test_region_decode_equals_a_full_decode_inside_the_region(pipeline, upload_id, client):
    source, _ = client.app.state.service.file_path(upload_id)
    request = GenerationRequest.from_dict(_repaint(upload_id, 3) | {"src_audio": str(source)})
    pipeline.fast_path = False  # upstream's way: whole encode, whole tiled decode
    try:
        full = pipeline.generate(request)
    finally:
        pipeline.fast_path = True
    fast = pipeline.generate(request)
    assert full.work["decoded_frames"] > fast.work["decoded_frames"]
    assert full.work["encoded_frames"] > fast.work["encoded_frames"] == 0
    reference = full.audio[0]
    error = np.abs(fast.audio[0] - reference).max() / np.sqrt((reference ** 2).mean())
    assert error < 2e-4  # the parity tolerance for audio


def test_continuing_a_result_by_its_id_returns_only_the_new_chunk_at_the_host_rate(client, upload_id):
    take = _run(client, _repaint(upload_id, 4))["results"][0]
    chunk_s = (SOURCE_S, SOURCE_S + 3.0)
    job = _run(client, {"task_type": "repaint", "src_audio": f"file:{take['file_id']}", "caption": "warm rhodes",
                        "repainting_start": chunk_s[0], "repainting_end": chunk_s[1], "inference_steps": 2,
                        "seed": 5, "output_region": list(chunk_s), "output_sample_rate": 44100})
    work = job["work"]
    chunk_frames = int(3.0 * FRAMES_PER_S)
    assert work["cache"]["source"] == "partial"  # the take's latents are reused; only the new span is encoded
    assert 0 < work["encoded_frames"] <= chunk_frames + 2 * (pipeline_reach(client) + 1) + 2
    assert work["decoded_frames"] <= chunk_frames + 2 * work["decoder_receptive_field"] + BUCKET_FRAMES
    result = job["results"][0]
    audio, rate = soundfile.read(result["path"], dtype="float32", always_2d=True)
    assert rate == 44100 == result["sample_rate"]
    assert audio.shape[0] == int(chunk_s[1] * 44100) - int(chunk_s[0] * 44100)
    assert np.abs(audio).max() > 0

    # the next chunk continues the whole take (kept beside the chunk), not just the chunk
    take, _ = soundfile.read(result["take_path"], dtype="float32", always_2d=True)
    assert take.shape[0] == int(chunk_s[1] * FRAMES_PER_S) * HOP_SAMPLES
    next_s = (chunk_s[1], chunk_s[1] + 3.0)
    follow = _run(client, {"task_type": "repaint", "src_audio": f"file:{result['take_file_id']}",
                           "caption": "warm rhodes", "repainting_start": next_s[0], "repainting_end": next_s[1],
                           "inference_steps": 2, "seed": 6, "output_region": list(next_s)})
    assert follow["work"]["cache"]["source"] == "partial"
    assert follow["work"]["encoded_frames"] <= chunk_frames + 2 * (pipeline_reach(client) + 1) + 2
    chunk, rate = soundfile.read(follow["results"][0]["path"], dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE and chunk.shape[0] == int(next_s[1] * SAMPLE_RATE) - int(next_s[0] * SAMPLE_RATE)


def pipeline_reach(client) -> int:
    return client.app.state.service.pipeline.encoder_reach.frames


def test_a_request_naming_no_dit_runs_on_the_default_after_one_naming_base(client):
    text = {"caption": "dusty drums", "duration": 5.2, "inference_steps": 2, "seed": 6}
    on_base = _run(client, text | {"dit": "acestep-v15-base"})
    assert on_base["models"]["dit"] == "acestep-v15-base"
    assert on_base["work"]["cache"]["source"] == "none" and on_base["work"]["dit_steps"] == 2
    after = _run(client, text)
    assert after["models"]["dit"] == "acestep-v15-turbo"
    assert client.get("/health").json()["dit"] == "acestep-v15-turbo"


def test_cancel_lands_between_decode_tiles(pipeline):
    events = []
    request = GenerationRequest.from_dict({"caption": "x", "duration": 5.2, "inference_steps": 1, "seed": 1})
    chunk, overlap = pipeline.vae.decode_chunk_frames, pipeline.vae.decode_overlap_frames
    pipeline.vae.decode_chunk_frames, pipeline.vae.decode_overlap_frames = 48, 12  # 24-frame cores: 6 tiles
    try:
        with pytest.raises(Cancelled):
            pipeline.generate(request, progress=events.append,
                              cancel=lambda: any(e.stage == "decode" and e.step >= 1 for e in events))
    finally:
        pipeline.vae.decode_chunk_frames, pipeline.vae.decode_overlap_frames = chunk, overlap
    tiles = [e for e in events if e.stage == "decode" and e.step >= 1]
    assert len(tiles) == 1 and tiles[0].total == 6 and "tile 1/6" in tiles[0].message
