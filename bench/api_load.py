"""Engine and bridge under load, on loopback: does the companion stay responsive?

1. Engine: an engine (stand-in pipeline, so a job is always running) is served by uvicorn on
   127.0.0.1 in a child process. N clients (another child process) poll `GET /v1/jobs/{id}` and
   M follow its events (SSE) while this script measures `GET /health` and a poll of its own.
   Prints p50 / p99 / max in milliseconds, idle and under load.
2. Bridge: a bridge command socket receives a burst of hostile OSC packets (bundles with a
   timetag an hour ahead, 26-`*` addresses, malformed bytes, nested bundles) interleaved with
   `/acecomp/ping`; prints the ping round-trip p50 / p99.

    PYTHONPATH=. python bench/api_load.py                      # 50 pollers, 10 SSE, 200 samples
    PYTHONPATH=. python bench/api_load.py --pollers 100 --sse 20 --samples 500 --burst 5000

Every loop is bounded (samples, burst size, seconds); nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from engine.service.app import create_app  # noqa: E402
from engine.service.core import EngineService  # noqa: E402
from engine.service.guard import CLIENT_HEADER  # noqa: E402
from simulators import wait_for  # noqa: E402
from simulators.pipelines import StandInPipeline  # noqa: E402

CLIENT_HEADERS = {CLIENT_HEADER: "1"}  # what EngineClient sends with every request


def percentiles(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return (f"p50 {statistics.median(ordered):7.1f} ms   p99 {p99:7.1f} ms   max {ordered[-1]:7.1f} ms   "
            f"(n={len(ordered)})")


def measure(http: httpx.Client, paths: list[str], samples: int) -> list[list[float]]:
    """Time `samples` GETs of each path, taken in turn so that every path meets the same load."""
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(samples):
        for index, path in enumerate(paths):
            start = time.perf_counter()
            response = http.get(path)
            times[index].append((time.perf_counter() - start) * 1000)
            if response.status_code >= 500:
                raise SystemExit(f"{path}: HTTP {response.status_code}")
    return times


def report(label: str, http: httpx.Client, job_id: str, samples: int) -> None:
    health, poll = measure(http, ["/health", f"/v1/jobs/{job_id}"], samples)
    print(f"  {label.ljust(20)}/health         {percentiles(health)}")
    print(f"  {label.ljust(20)}/v1/jobs/{{id}}   {percentiles(poll)}")


def _serve_engine(results: str, port: int) -> None:
    """Child process: an engine whose jobs run until cancelled (many short stand-in steps)."""
    from engine.service.cli import serve

    service = EngineService(StandInPipeline(steps=100_000, step_s=0.01), results, log=lambda line: None)
    service.start()
    serve(create_app(service), service, "127.0.0.1", port)


def _load_clients(url: str, job_id: str, pollers: int, sse: int, seconds: float, interval_s: float,
                  ready) -> None:
    """Child process: `pollers` clients polling the job (every `interval_s`, 0 = back to back) and
    `sse` following its events, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    polls = [0]

    def poller():
        with httpx.Client(base_url=url, headers=CLIENT_HEADERS, timeout=30) as own:
            while time.monotonic() < deadline:
                own.get(f"/v1/jobs/{job_id}")
                polls[0] += 1
                if interval_s:
                    time.sleep(interval_s)

    def follower():
        with httpx.Client(base_url=url, headers=CLIENT_HEADERS, timeout=httpx.Timeout(30, read=None)) as own:
            with own.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
                for _ in stream.iter_lines():
                    if time.monotonic() > deadline:
                        return

    threads = [threading.Thread(target=poller, daemon=True) for _ in range(pollers)]
    threads += [threading.Thread(target=follower, daemon=True) for _ in range(sse)]
    for thread in threads:
        thread.start()
    wait_for(lambda: polls[0] >= pollers, timeout=60)
    ready.set()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 5)


def engine_load(pollers: int, sse: int, samples: int, seconds_cap: float, interval_s: float) -> None:
    """Engine, load clients and measurements in three processes, so none steals the other's GIL."""
    import multiprocessing
    import socket

    spawn = multiprocessing.get_context("spawn")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    engine = spawn.Process(target=_serve_engine, args=(tempfile.mkdtemp(prefix="ace-api-load-"), port), daemon=True)
    engine.start()
    load = None
    try:
        with httpx.Client(base_url=url, headers=CLIENT_HEADERS, timeout=30) as http:
            def up():
                try:
                    return http.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(up, timeout=120, interval=0.1)
            job_id = http.post("/v1/jobs", json={"request": {"caption": "load", "duration": 1}}).json()["id"]
            wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["state"] == "running", timeout=30)
            print(f"engine: a job is running; measuring /health and a poll ({samples} samples each)")
            report("idle:", http, job_id, samples)
            ready = spawn.Event()
            load = spawn.Process(target=_load_clients, args=(url, job_id, pollers, sse, seconds_cap, interval_s, ready),
                                 daemon=True)
            load.start()
            if not ready.wait(120):
                raise SystemExit("the load clients did not start")
            report(f"{pollers} polling + {sse} SSE:", http, job_id, samples)
            http.delete(f"/v1/jobs/{job_id}")
    finally:
        for process in (load, engine):
            if process is not None and process.is_alive():
                process.terminate()  # the engine stops as on SIGTERM
                process.join(15)


def osc_burst(burst: int, pings: int) -> None:
    from pythonosc.osc_bundle_builder import OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    from bridge.app import BridgeApp
    from bridge.config import BridgeConfig
    from simulators.osc import OscPeer, free_udp_port, osc_bytes

    config = BridgeConfig(engine_url=f"http://127.0.0.1:{free_udp_port()}", host="none", osc_port=0,
                          output_dir=tempfile.mkdtemp(prefix="ace-api-load-clips-"))
    app = BridgeApp(config)
    app.start()
    peer = OscPeer()
    try:
        future = OscBundleBuilder(time.time() + 3600)
        future.add_content(OscMessageBuilder(address="/acecomp/tempo").build())
        hostile = [future.build().dgram, osc_bytes("/acecomp/" + "*" * 26), b"#bundle\0" + b"\xff" * 24,
                   osc_bytes("/acecomp/bogus", 1, 2.0)]
        port = app.commands.port
        times = []
        every = max(1, burst // pings)
        sent = 0
        for index in range(burst):
            peer.send_raw(port, hostile[index % len(hostile)])
            if index % every == 0 and sent < pings:
                before = len(peer.all("/acecomp/pong"))
                start = time.perf_counter()
                peer.send(port, "/acecomp/ping")
                wait_for(lambda before=before: len(peer.all("/acecomp/pong")) > before, timeout=10, interval=0.0005)
                times.append((time.perf_counter() - start) * 1000)
                sent += 1
        print(f"bridge: /acecomp/ping round-trip during a burst of {burst} hostile packets: {percentiles(times)}")
    finally:
        peer.close()
        app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pollers", type=int, default=50, help="clients polling the running job")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between one client's polls (default 0: back to back, the worst case)")
    parser.add_argument("--sse", type=int, default=10, help="clients following its events")
    parser.add_argument("--samples", type=int, default=200, help="requests measured per figure")
    parser.add_argument("--seconds", type=float, default=120.0, help="upper bound on the loaded phase")
    parser.add_argument("--burst", type=int, default=2000, help="hostile OSC packets in the burst")
    parser.add_argument("--pings", type=int, default=100, help="pings timed during the burst")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the burst's refusals are logged one by one otherwise
    engine_load(args.pollers, args.sse, args.samples, args.seconds, args.interval)
    osc_burst(args.burst, args.pings)


if __name__ == "__main__":
    main()
