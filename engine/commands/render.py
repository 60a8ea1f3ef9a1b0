"""`ace-companion render`: run one request (JSON) through the engine and write WAV files.

Batch requests write one file per item: OUT.wav for batch_size 1, otherwise OUT-1.wav,
OUT-2.wav, ... next to OUT. `--dump FILE.safetensors` stores the intermediate tensors under the
parity-case names (token ids, hidden states, sampler trajectory, latents, audio).
Exit codes: 0 ok, 2 bad request / missing file / engine error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", metavar="DIR", default=None,
                        help="checkpoints folder (default: $ACE_COMPANION_CHECKPOINTS or ./checkpoints)")
    parser.add_argument("--request", metavar="REQ.json", required=True,
                        help="request file with upstream parameter names (relative audio paths resolve "
                             "against the file's folder)")
    parser.add_argument("--out", metavar="OUT.wav", required=True,
                        help="output WAV (48 kHz stereo float); batches write OUT-1.wav, OUT-2.wav, ...")
    parser.add_argument("--dump", metavar="DUMP.safetensors", default=None,
                        help="also write intermediate tensors (parity names) to this safetensors file")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--dit", metavar="NAME", default=None,
                        help="DiT checkpoint folder (default: the request's `dit`, else acestep-v15-turbo)")
    parser.add_argument("--lm", metavar="NAME", default=None,
                        help="5 Hz LM planner to load: 0.6B, 1.7B, 4B or a folder name (default: with "
                             "\"thinking\": true, the smallest LM folder present)")
    parser.add_argument("--allow-short-region", action="store_true",
                        help="accept repaint regions outside 3-90 s (for parity fixtures; normal use keeps "
                             "the limit)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile the DiT step: auto (default) = on for cuda, off for cpu")
    parser.add_argument("--low-vram", action="store_true",
                        help="keep the text encoder, VAE and LM in CPU memory between stages, so only the DiT "
                             "stays on the GPU (automatic when the GPU is too small for everything)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def output_paths(out: Path, count: int) -> list[Path]:
    """OUT.wav for one item, OUT-1.wav ... OUT-n.wav for a batch."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i + 1}{out.suffix or '.wav'}") for i in range(count)]


class _StderrProgress:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.started = time.perf_counter()

    def __call__(self, event) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.started
        if event.stage == "diffusion" and event.total:
            filled = int(20 * event.step / event.total)
            bar = "#" * filled + "-" * (20 - filled)
            print(f"[{elapsed:6.1f}s] diffusion [{bar}] {event.step}/{event.total}", file=sys.stderr, flush=True)
        else:
            print(f"[{elapsed:6.1f}s] {event.stage}: {event.message}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"ace-companion render: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from engine.request import GenerationRequest, RequestError
    from engine.types import EngineError

    try:
        request = GenerationRequest.from_json_file(args.request)
    except RequestError as exc:
        return _fail(f"bad request: {exc}")
    for name in ("src_audio", "reference_audio"):
        path = getattr(request, name)
        if path and not Path(path).is_file():
            return _fail(f"bad request: {name}: file not found: {path}")
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        return _fail(f"--out: folder does not exist: {out.parent}")

    import soundfile as sf
    import torch

    from engine.pipeline import DEFAULT_DIT, Pipeline

    progress = _StderrProgress(args.quiet)
    dit = args.dit or request.dit or DEFAULT_DIT
    request.dit = dit
    try:
        progress(_event("load", f"loading models from {args.checkpoints or 'default checkpoints'} (DiT {dit})"))
        lm = args.lm or (_first_lm(args.checkpoints) if request.thinking else None)
        pipeline = Pipeline.from_checkpoints(args.checkpoints, dit=dit, lm=lm, device=args.device, dtype=args.dtype,
                                             compile=args.compile, low_vram=True if args.low_vram else None,
                                             warm_up_s=())
        pipeline.enforce_region_limits = not args.allow_short_region
        result = pipeline.generate(request, progress=progress, dump=bool(args.dump))
    except RequestError as exc:
        return _fail(f"bad request: {exc}")
    except (EngineError, FileNotFoundError) as exc:
        return _fail(str(exc))
    except torch.cuda.OutOfMemoryError:
        return _fail("out of GPU memory; try a shorter duration, a smaller batch or --device cpu")

    paths = output_paths(out, len(result.audio))
    for path, audio in zip(paths, result.audio):
        sf.write(str(path), audio.T, result.sample_rate, subtype="FLOAT")
    if args.dump:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in result.dump.items()}, args.dump)
    if not args.quiet:
        seeds = ", ".join(str(s) for s in result.seeds)
        print(f"wrote {', '.join(str(p) for p in paths)} (seeds {seeds})", file=sys.stderr)
    return 0


def _first_lm(root) -> str | None:
    """The smallest LM folder under the checkpoint root (None when there is none)."""
    from engine.checkpoints import LM_MODELS, resolve_root

    base = resolve_root(root)
    return next((name for name in LM_MODELS if (base / name).is_dir()), None)


def _event(stage: str, message: str):
    from engine.types import ProgressEvent
    return ProgressEvent(stage, 0, 0, message)
