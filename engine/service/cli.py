"""`ace-companion engine`: load the models once, then serve the HTTP job API."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
ENV_TOKEN = "ACE_COMPANION_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", metavar="DIR", default=None,
                        help="checkpoints folder (default: $ACE_COMPANION_CHECKPOINTS or ./checkpoints)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default 127.0.0.1; any other address needs --token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--token", default=None,
                        help=f"require 'Authorization: Bearer TOKEN' on every request "
                             f"(default: ${ENV_TOKEN} if set)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="compute device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="model dtype (default: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--dit", default="acestep-v15-turbo", help="DiT checkpoint folder to load at start")
    parser.add_argument("--low-vram", action="store_true",
                        help="keep the text encoder, VAE and LM in CPU memory between stages, so only the DiT "
                             "stays on the GPU (automatic when the GPU is too small for everything)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile the DiT step: auto (default) = on for cuda (CUDA graphs, compiled and "
                             "warmed up for 20 s and 30 s requests at start), off for cpu")
    parser.add_argument("--lm", default="none", help="5 Hz LM planner to load: none, 0.6B, 1.7B or 4B")
    parser.add_argument("--results", metavar="DIR", default="results",
                        help="folder for rendered audio, sidecars, uploads and job files (default ./results)")
    parser.add_argument("--max-upload-mb", type=float, default=512.0,
                        help="largest accepted upload in MiB (default 512)")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="let web pages from ORIGIN (e.g. http://localhost:5174 for ACE-Step-DAW) call the "
                             "engine from a browser (CORS); repeatable")
    parser.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                        help="let HTTP requests name audio files under DIR by path (src_audio, reference_audio); "
                             "repeatable. Default: none, so clients upload files (file:<id>) or name results")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests addressed to NAME (the Host header), e.g. a LAN name of "
                             "this machine; '*' for any. Default: localhost, 127.0.0.1, [::1], --host, and with "
                             "--host 0.0.0.0 this machine's host name and addresses")
    parser.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                        help="HTTP server log level (default warning)")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> str | None:
    """The reason the engine must not start on this address, or None."""
    if not is_loopback(host) and not token:
        return (f"refusing to listen on {host} without a token: anyone on the network could use the engine. "
                f"Pass --token TOKEN (or set ${ENV_TOKEN}), or listen on 127.0.0.1.")
    return None


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(ENV_TOKEN) or None
    problem = check_bind(args.host, token)
    if problem:
        print(f"ace-companion engine: {problem}", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"ace-companion engine: --port {args.port} is not a TCP port (1-65535)", file=sys.stderr)
        return 2
    if not (args.max_upload_mb > 0 and args.max_upload_mb < 1e6):
        print("ace-companion engine: --max-upload-mb must be a positive number of MiB", file=sys.stderr)
        return 2
    for folder in args.allow_path:
        if not os.path.isdir(os.path.expanduser(folder)):
            print(f"ace-companion engine: --allow-path {folder} is not a folder", file=sys.stderr)
            return 2

    from engine.checkpoints import resolve_root
    from engine.service.app import create_app
    from engine.service.core import EngineService
    from engine.types import EngineError

    lm = None if str(args.lm).strip().lower() in ("", "none") else args.lm
    root = resolve_root(args.checkpoints)
    print(f"engine: loading models from {root} (DiT {args.dit}, LM {lm or 'none'})", file=sys.stderr, flush=True)
    try:
        from engine.pipeline import Pipeline

        pipeline = Pipeline.from_checkpoints(root, dit=args.dit, lm=lm, device=args.device, dtype=args.dtype,
                                             compile=args.compile, low_vram=True if args.low_vram else None)
    except EngineError as exc:
        print(f"ace-companion engine: cannot load models: {exc}", file=sys.stderr)
        return 1
    info = pipeline.info()
    from engine.checkpoints import TINY_WARNING, tiny_in_use
    tiny = tiny_in_use(root, info.get("dit"), info.get("lm"))
    print(f"engine: ready on {info.get('device')} ({info.get('dtype')}), DiT {info.get('dit')}, "
          f"LM {info.get('lm') or 'none'}" + (f"; {TINY_WARNING} (`ace-companion download` fetches the real "
                                              f"ones)" if tiny else ""), file=sys.stderr, flush=True)
    if pipeline.vram.offload:
        print(f"engine: low-VRAM mode ({pipeline.vram.reason}): text encoder, VAE and LM wait in CPU memory "
              f"between stages", file=sys.stderr, flush=True)

    service = EngineService(pipeline, results_dir=args.results,
                            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), allowed_roots=args.allow_path)
    app = create_app(service, token=token, allow_origins=args.allow_origin, allow_hosts=args.allow_host,
                     bound_host=args.host)
    service.start()
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"engine: serving http://{shown_host}:{args.port} (results in {service.store.root}"
          f"{', token required' if token else ''}); Ctrl-C stops", file=sys.stderr, flush=True)
    return serve(app, service, host=args.host, port=args.port, log_level=args.log_level)


class _Terminated(BaseException):
    """SIGTERM arrived (systemd, Docker, a process manager): stop as for Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def serve(app, service, host: str, port: int, log_level: str = "warning") -> int:
    """Serve until Ctrl-C or SIGTERM; either way the running job goes back to the queue and we exit 0.

    uvicorn shuts down on both signals and then raises the signal again; for SIGTERM the default
    action would kill the process before `service.stop()` could requeue the running job.
    """
    import signal

    import uvicorn

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        # event streams stay open while jobs run; do not let them hold up the stop
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3)
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        service.stop()
        signal.signal(signal.SIGTERM, previous)
    print("engine: stopped", file=sys.stderr, flush=True)
    return 0
