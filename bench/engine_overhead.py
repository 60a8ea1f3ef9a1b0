"""How much time does the engine service add on top of the pipeline's own compute?

Runs the real pipeline on the tiny parity checkpoints, first directly (`Pipeline.generate`),
then through the HTTP service (uvicorn on 127.0.0.1, `EngineClient`: POST the job, follow
its events, result on disk and downloadable), for 1 client and for 8 concurrent clients.

    PYTHONPATH=. python bench/engine_overhead.py [--checkpoints tests/data/parity/checkpoints]
                                                 [--repeats 5] [--duration 5] [--clients 8]

Prints a table: per-job time through the service vs direct compute, absolute overhead in ms
and the ratio. With 8 clients the jobs queue behind each other (one worker), so the table
shows the wall time for all of them against 8x the direct compute time. Direct and service
runs are interleaved; on a shared CPU machine expect +-100 ms of noise per job.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.client import EngineClient  # noqa: E402
from engine.request import GenerationRequest  # noqa: E402
from engine.service.threaded import InProcessEngine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", default=str(ROOT / "tests/data/parity/checkpoints"))
    parser.add_argument("--dit", default="acestep-v15-turbo")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    from engine.pipeline import Pipeline

    print(f"loading {args.dit} from {args.checkpoints} ...", file=sys.stderr)
    pipeline = Pipeline.from_checkpoints(args.checkpoints, dit=args.dit, device=args.device)
    request = {"caption": "bench groove", "duration": args.duration, "seed": 1, "inference_steps": 8}
    parsed = GenerationRequest.from_dict(request)

    direct_compute(pipeline, parsed)  # warm-up

    with tempfile.TemporaryDirectory(prefix="ace-bench-") as results:
        with InProcessEngine(results, pipeline) as server:
            client = EngineClient(server.url, timeout=60)
            run_job(client, request)  # warm-up of the HTTP path
            # interleaved, so that load from other processes hits both sides alike
            direct, single = [], []
            for _ in range(args.repeats):
                direct.append(direct_compute(pipeline, parsed))
                single.append(run_job(client, request))
            compute = statistics.median(direct)

            latencies: list[float] = []
            lock = threading.Lock()

            def one_client() -> None:
                own = EngineClient(server.url, timeout=60)
                elapsed = run_job(own, request)
                with lock:
                    latencies.append(elapsed)

            threads = [threading.Thread(target=one_client) for _ in range(args.clients)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start

    one = statistics.median(single)
    rows = [
        ("1 client, per job", one, compute),
        (f"{args.clients} clients, all jobs (wall)", wall, compute * args.clients),
    ]
    info = pipeline.info()
    print(f"\nengine overhead: {args.dit} on {info.get('device')} ({info.get('dtype')}), "
          f"{args.duration:g} s clip, {args.repeats} repeats (median)")
    print(f"{'case':<30} {'service ms':>11} {'compute ms':>11} {'overhead ms':>12} {'ratio':>7}")
    for name, service_s, compute_s in rows:
        print(f"{name:<30} {service_s * 1000:>11.1f} {compute_s * 1000:>11.1f} "
              f"{(service_s - compute_s) * 1000:>12.1f} {service_s / compute_s:>7.3f}")
    print(f"1 client: paired overhead (service - direct, median of {args.repeats}) "
          f"{statistics.median(s - d for s, d in zip(single, direct)) * 1000:.1f} ms")
    print(f"{args.clients} clients: mean latency {statistics.mean(latencies) * 1000:.1f} ms "
          f"(jobs run one at a time on the single worker)")
    return 0


_DIRECT = ThreadPoolExecutor(max_workers=1, thread_name_prefix="direct")


def direct_compute(pipeline, request: GenerationRequest) -> float:
    """Seconds for `Pipeline.generate` alone, on one long-lived thread like the service's worker.

    (On CPU, torch in the main thread measured several times slower than in a worker thread
    on a busy machine, and a fresh thread pays to start its own OpenMP pool, so the direct
    side runs on a persistent thread too.)
    """
    def work() -> float:
        start = time.perf_counter()
        pipeline.generate(request)
        return time.perf_counter() - start

    return _DIRECT.submit(work).result()


def run_job(client: EngineClient, request: dict) -> float:
    """Seconds from POST to the finished job with its result downloadable."""
    start = time.perf_counter()
    job_id = client.submit(request)
    job = client.wait(job_id, timeout=600)
    if job["state"] != "done":
        raise SystemExit(f"bench job {job_id} ended {job['state']}: {job['error']}")
    return time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
