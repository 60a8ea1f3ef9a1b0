"""No file on the engine machine can be read through the HTTP API, and no web page can drive it.

Each way a client could name a file it should not read is tried against the job routes and the
upstream-compatible ones; then the requests a malicious web page (or a DNS-rebinding one) can make.
"""

import asyncio
import json
import os

import pytest
from fastapi.testclient import TestClient

from engine.request import RequestError
from engine.service.app import create_app
from engine.service.core import EngineService
from engine.service.guard import UNAUTHENTICATED_BODY_LIMIT
from simulators import wait_for
from simulators.pipelines import StandInPipeline
from tests.service_support import CLIENT_HEADERS, api_client, write_tone


@pytest.fixture
def places(tmp_path):
    """An allowed folder, a secret audio file outside it, and a symlink inside pointing at the secret."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = tmp_path / "private"
    outside.mkdir()
    secret = write_tone(outside / "secret.wav")
    os.symlink(secret, allowed / "link.wav")
    good = write_tone(allowed / "song.wav")
    return {"allowed": allowed, "secret": secret, "good": good, "tmp": tmp_path}


@pytest.fixture
def service(tmp_path, places):
    pipeline = StandInPipeline(steps=1)
    svc = EngineService(pipeline, tmp_path / "results", max_upload_bytes=200_000, log=lambda line: None,
                        allowed_roots=[places["allowed"]])
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def client(service):
    with api_client(create_app(service)) as c:
        yield c


def _finished_job(client, service):
    """A done job with one rendered result; returns its JSON."""
    job_id = client.post("/v1/jobs", json={"request": {"caption": "x", "duration": 1}}).json()["id"]
    return wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["state"] == "done" and j)


def _file_read_ways(service, places, job):
    """(field, value) pairs that name a file the client may not read, one per way of trying."""
    root = service.store.root
    upload_dir = service.store.uploads_dir
    os.makedirs(upload_dir / ("b" * 32), exist_ok=True)
    planted = write_tone(upload_dir / ("b" * 32) / "x.wav")
    escape = root / job["id"] / "escape.wav"
    os.symlink(places["secret"], escape)
    home_secret = os.path.join("~", os.path.relpath(places["secret"], os.path.expanduser("~")))
    return [
        ("src_audio", "/etc/passwd"),                                           # 1 absolute path
        ("src_audio", "/proc/self/environ"),                                    # 2 /proc
        ("src_audio", places["secret"]),                                        # 3 real audio elsewhere
        ("src_audio", os.path.relpath(places["secret"])),                       # 4 relative path
        ("src_audio", str(places["allowed"]) + "/../private/secret.wav"),       # 5 ../ out of a root
        ("src_audio", str(places["allowed"] / "link.wav")),                     # 6 symlink leaving a root
        ("src_audio", str(next((root / ".jobs").glob("*.json")))),              # 7 the job records
        ("src_audio", planted),                                                 # 8 an upload by path
        ("src_audio", "file://" + places["secret"]),                            # 9 file:// URL
        ("src_audio", home_secret),                                             # 10 ~ expansion
        ("src_audio", "file:../../" + os.path.basename(places["secret"])),      # 11 traversal in a file id
        ("reference_audio", places["secret"]),                                  # 12 reference audio
        ("reference_audio", str(escape)),                                       # 13 symlink in results
        ("src_audio", str(root / job["id"] / (job["results"][0]["name"][:-4] + ".json"))),  # 14 sidecar
    ]


def test_no_file_read_way_gets_through_the_job_routes(client, service, places):
    job = _finished_job(client, service)
    ways = _file_read_ways(service, places, job)
    assert len(ways) == 14
    for field, value in ways:
        task = {"task_type": "cover", "src_audio": value} if field == "src_audio" else \
            {"caption": "x", "reference_audio": value}
        response = client.post("/v1/jobs", json={"request": task})
        assert response.status_code == 422, (value, response.text)
        assert response.json()["field"] == field
        # multipart with the path as the request's text does not help either
        form = client.post("/v1/jobs", data={"request": json.dumps(task)})
        assert form.status_code == 422, (value, form.text)


def test_no_file_read_way_gets_through_the_upstream_routes(client, service, places):
    job = _finished_job(client, service)
    for field, value in _file_read_ways(service, places, job):
        name = {"src_audio": "src_audio_path", "reference_audio": "reference_audio_path"}[field]
        params = {"prompt": "x", "task_type": "cover" if field == "src_audio" else "text2music", name: value}
        assert client.post("/release_task", json=params).status_code == 422, value
        assert client.post("/release_task", data=params).status_code == 422, value   # form / multipart
        assert client.post("/release_task", json={**params, "metas": {name: value}}).status_code == 422, value
    for path in ("/etc/passwd", places["secret"], "../../private/secret.wav", "~/x.wav",
                 str(next((service.store.root / ".jobs").glob("*.json"))), str(service.store.root / job["id"])):
        assert client.get("/v1/audio", params={"path": path}).status_code == 404, path


def test_refusals_do_not_tell_which_files_exist(client):
    there = client.post("/v1/jobs", json={"request": {"task_type": "cover", "src_audio": "/etc/passwd"}})
    missing = client.post("/v1/jobs", json={"request": {"task_type": "cover", "src_audio": "/etc/passwd-nope"}})
    assert there.json()["detail"].replace("-nope", "") == missing.json()["detail"].replace("-nope", "")


def test_allowed_sources_still_work(client, service, places):
    job = _finished_job(client, service)
    result = job["results"][0]
    with open(places["good"], "rb") as fh:
        upload_id = client.post("/v1/files", files={"file": ("a.wav", fh, "audio/wav")}).json()["id"]
    for value in (places["good"], f"file:{upload_id}", f"file:{result['file_id']}", result["path"]):
        response = client.post("/v1/jobs", json={"request": {"task_type": "cover", "src_audio": value}})
        assert response.status_code == 200, (value, response.text)
    # the pipeline reads the resolved path of the allowed file, nothing else
    wait_for(lambda: all(j["state"] in ("done", "failed") for j in client.get("/v1/jobs").json()["jobs"]))
    assert all(j["state"] == "done" for j in client.get("/v1/jobs").json()["jobs"])


def test_model_names_are_not_paths(client):
    for name in ("../../tmp/x", "/tmp/x", "..", "a\\b"):
        response = client.post("/v1/models/load", json={"dit": name})
        assert response.status_code == 422 and response.json()["field"] == "dit", name
        assert client.post("/v1/jobs", json={"request": {"caption": "x", "dit": name}}).status_code == 422


def test_plain_paths_work_for_the_local_render_cli(tmp_path):
    """The CLI builds the request itself: plain relative paths resolve against the request file."""
    from engine.request import GenerationRequest

    write_tone(tmp_path / "src.wav")
    request = GenerationRequest.from_dict({"task_type": "cover", "src_audio": "src.wav"}, base_dir=tmp_path)
    assert request.src_audio == str(tmp_path / "src.wav")


# ------------------------------------------------------------------ a malicious web page
@pytest.fixture
def bare(service):
    """A client that sends only what a browser page could send (no custom header)."""
    with TestClient(create_app(service), base_url="http://127.0.0.1") as c:
        yield c


def test_simple_cross_origin_requests_cannot_submit(bare, service):
    page = {"Origin": "http://evil.example"}
    text = json.dumps({"prompt": "x"})
    attempts = [
        bare.post("/release_task", content=text, headers={"content-type": "text/plain"}),
        bare.post("/release_task", content=text, headers={"content-type": "text/plain", **page}),
        bare.post("/v1/jobs", data={"request": json.dumps({"caption": "x"})}),
        bare.post("/v1/jobs", data={"request": json.dumps({"caption": "x"})}, headers=page),
        bare.post("/v1/jobs", files={"src_audio": ("a.wav", b"RIFF", "audio/wav")},
                  data={"request": "{}"}),
        bare.post("/v1/files", files={"file": ("a.wav", b"RIFF", "audio/wav")}),
        bare.post("/v1/jobs", json={"request": {"caption": "x"}}, headers=page),   # even JSON, from a page
        bare.post("/v1/jobs", json={"request": {"caption": "x"}}, headers={"Origin": "null"}),
    ]
    for response in attempts:
        assert response.status_code in (403, 415), response.text
        assert response.json()["field"] in ("origin", "content-type")
    assert service.list_jobs() == []


def test_foreign_host_and_dns_rebinding_are_refused(service):
    app = create_app(service)
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "192.168.1.9"):
        with TestClient(app, base_url=f"http://{host}", headers=CLIENT_HEADERS) as c:
            assert c.get("/health").status_code == 403
            rebinding = c.post("/v1/jobs", json={"request": {"caption": "x"}},
                               headers={"Origin": f"http://{host}"})
            assert rebinding.status_code == 403 and rebinding.json()["field"] == "host"
    assert service.list_jobs() == []


def test_own_names_and_configured_hosts_are_answered(service):
    for host in ("127.0.0.1:8765", "localhost", "[::1]:8765"):
        with TestClient(create_app(service), base_url=f"http://{host}", headers=CLIENT_HEADERS) as c:
            assert c.get("/health").status_code == 200
            same_origin = c.post("/v1/jobs", json={"request": {"caption": "x"}},
                                 headers={"Origin": f"http://{host}"})  # the /docs page
            assert same_origin.status_code == 200
    with TestClient(create_app(service, allow_hosts=["studio.lan"]), base_url="http://studio.lan:8765") as c:
        assert c.get("/health").status_code == 200
    with TestClient(create_app(service, bound_host="10.1.2.3"), base_url="http://10.1.2.3") as c:
        assert c.get("/health").status_code == 200
    with TestClient(create_app(service, allow_hosts=["*"]), base_url="http://anything") as c:
        assert c.get("/health").status_code == 200


def test_pages_served_by_this_machine_may_post(service):
    """ACE-Step-DAW's dev server (127.0.0.1:5174) proxies /api to the engine with the browser's Origin."""
    with TestClient(create_app(service), base_url="http://127.0.0.1:8001") as c:
        for origin in ("http://127.0.0.1:5174", "http://localhost:5174", "http://[::1]:3000"):
            response = c.post("/release_task", data={"prompt": "x"}, headers={"Origin": origin})
            assert response.status_code == 200, (origin, response.text)
            assert "access-control-allow-origin" not in response.headers  # still no CORS without opt-in
        for origin in ("http://127.0.0.1.evil.example:5174", "http://evil.example", "null", "file://"):
            assert c.post("/release_task", data={"prompt": "x"}, headers={"Origin": origin}).status_code == 403


def test_allowed_origin_page_may_post_forms(service):
    app = create_app(service, allow_origins=["http://localhost:5173"])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        response = c.post("/release_task", data={"prompt": "x"}, headers={"Origin": "http://localhost:5173"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


# ------------------------------------------------------------------ bodies: auth and size before reading
def _asgi_call(app, method, path, headers, chunks):
    """Drive the ASGI app directly; returns (status, body, bytes the app pulled from the client)."""
    pulled = 0
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent = []

    async def receive():
        nonlocal pulled
        if not messages:
            await asyncio.sleep(3600)
        message = messages.pop(0)
        pulled += len(message["body"])
        return message

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 8765), "client": ("127.0.0.1", 5000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1:8765", **headers}.items()]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body or b"null"), pulled


def test_oversized_body_is_refused_from_content_length_without_reading(service):
    app = create_app(service)
    huge = str(64 * 1024 * 1024)
    for path, kind in (("/v1/files", "multipart/form-data; boundary=x"), ("/v1/jobs", "application/json"),
                       ("/release_task", "application/json")):
        status, body, pulled = _asgi_call(app, "POST", path, {"content-type": kind, "content-length": huge,
                                                              **CLIENT_HEADERS}, [b"x" * 1024])
        assert status == 413 and pulled == 0, (path, body)


def test_streamed_body_is_cut_at_the_limit(service):
    app = create_app(service)
    chunk = b"x" * 65536
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    status, body, pulled = _asgi_call(app, "POST", "/v1/files", {"content-type": "multipart/form-data; boundary=x",
                                                                 **CLIENT_HEADERS}, [head] + [chunk] * 40)
    assert status == 413 and "too large" in body["detail"]
    assert pulled <= 2 * service.max_upload_bytes + 1024 * 1024 + len(chunk)
    status, body, pulled = _asgi_call(app, "POST", "/v1/jobs", {"content-type": "application/json",
                                                                **CLIENT_HEADERS}, [chunk] * 400)
    assert status == 413 and pulled <= 16 * 1024 * 1024 + len(chunk)


def test_token_is_checked_before_the_body_is_read(service):
    app = create_app(service, token="s3cret")
    huge = str(64 * 1024 * 1024)
    for path in ("/release_task", "/v1/jobs", "/v1/files", "/query_result"):
        status, body, pulled = _asgi_call(app, "POST", path, {"content-type": "multipart/form-data; boundary=x",
                                                              "content-length": huge}, [b"x" * 1024])
        assert status == 401 and pulled == 0, (path, body)
    # chunked, without a length: the upstream routes read at most a small body looking for ai_token
    status, _, pulled = _asgi_call(app, "POST", "/release_task", {"content-type": "application/json"},
                                   [b"x" * 65536] * 64)
    assert status == 413 and pulled <= UNAUTHENTICATED_BODY_LIMIT + 65536
    status, _, pulled = _asgi_call(app, "POST", "/v1/files", {"content-type": "multipart/form-data; boundary=x"},
                                   [b"x" * 65536] * 64)
    assert status == 401 and pulled == 0


def test_absurd_content_length_is_413_not_a_crash(service):
    app = create_app(service)
    status, body, pulled = _asgi_call(app, "POST", "/v1/jobs", {"content-type": "application/json",
                                                                "content-length": "9" * 5000}, [b"{}"])
    assert status == 413 and pulled == 0
    app = create_app(service, token="t")
    status, body, pulled = _asgi_call(app, "POST", "/release_task", {"content-type": "application/json",
                                                                     "content-length": "9" * 5000}, [b"{}"])
    assert status == 401 and pulled == 0


def test_job_and_upload_records_stay_closed_under_an_allowed_root(tmp_path):
    """Even when --allow-path covers the results folder, .jobs and .uploads are not read by path."""
    service = EngineService(StandInPipeline(steps=1), tmp_path / "results", log=lambda line: None,
                            allowed_roots=[tmp_path])
    os.makedirs(service.store.uploads_dir / ("d" * 32))
    planted = write_tone(service.store.uploads_dir / ("d" * 32) / "x.wav")
    record = service.store.jobs_dir / ("e" * 32 + ".json")
    record.write_text("{}")
    for value in (planted, str(record)):
        with pytest.raises(RequestError):
            service.confine_path("src_audio", value)
    assert service.confine_path("src_audio", write_tone(tmp_path / "ok.wav")) == tmp_path / "ok.wav"
