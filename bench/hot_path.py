"""The DAW hot path, two ways in one run: an 8-bar repaint the way upstream does it, and ours.

Run from the repository root:

    python bench/hot_path.py                              # tiny parity weights, CPU
    python bench/hot_path.py --full-size --device cuda    # real 2B shapes, random weights

The request is the bridge's: an 8-bar region at 120 BPM in 4/4 (16 s) inside a 20 s context
window (2 s of context each side), 8 turbo steps.

* upstream: every trigger VAE-encodes the whole window, decodes the whole output in 256-frame
  tiles (64 frames of context each side) and runs the DiT loop step by step
  (`Pipeline.fast_path = False`);
* ours: the musician's second trigger on the same audio: the source latents come from the
  source cache (nothing encoded), the caption encodings from the conditioning cache, and only
  the region plus the decoder's receptive field is decoded (`Pipeline.fast_path = True`).

The first trigger on our side (a cache miss) is run first to fill the caches and shown as well.
Times are wall-clock seconds of each pipeline stage from `GenerationOutput.timings`; the work
figures are the job JSON's `work` block. The last line is the ratio of the two totals.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.audio_io import write_audio  # noqa: E402
from engine.devices import resolve_device_dtype  # noqa: E402
from engine.pipeline import Pipeline  # noqa: E402
from engine.request import GenerationRequest  # noqa: E402
from engine.units import SAMPLE_RATE  # noqa: E402

PARITY_CHECKPOINTS = ROOT / "tests" / "data" / "parity" / "checkpoints"  # data files, not test code
STAGES = ("encode_audio", "encode_text", "diffusion", "decode", "postprocess")


def tiny_checkpoints() -> Path:
    """The tiny parity weights when this is a source checkout, else freshly written tiny ones."""
    if (PARITY_CHECKPOINTS / "vae").is_dir():
        return PARITY_CHECKPOINTS
    from engine.commands.tiny import make_tiny_checkpoints

    folder = Path(tempfile.mkdtemp(prefix="hot-path-")) / "checkpoints"
    make_tiny_checkpoints(folder)
    return folder


def full_size_pipeline(device: torch.device, dtype: torch.dtype) -> Pipeline:
    """Published shapes with random weights (bench/engine_stages.py's models); the tiny parity
    tokenizer stands in for the real one (the token count is what costs)."""
    from bench.engine_stages import load_full_size
    from engine.checkpoints import TEXT_ENCODER_DIR, load_text_encoder
    from engine.models.text_encoder import TextEncoder

    text, vae, dit, _, _ = load_full_size(device, dtype)
    tokenizer, _ = load_text_encoder(PARITY_CHECKPOINTS / TEXT_ENCODER_DIR)
    return Pipeline(ROOT, dit, "acestep-v15-turbo", TextEncoder(tokenizer, text.model, device, dtype), vae,
                    device, dtype)


def context_window(path: Path, seconds: float) -> None:
    """A 20 s 'song': a bass line, a chord pad and a little noise (any audio does; it is only encoded)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    bass = 0.25 * np.sin(2 * np.pi * 55.0 * (1 + (np.floor(t / 2) % 4) / 8) * t)
    pad = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    noise = 0.02 * np.random.default_rng(0).standard_normal(t.shape)
    left = (bass + pad + noise).astype(np.float32)
    write_audio(path, np.stack([left, np.roll(left, 480)]))


def run(pipeline: Pipeline, request: GenerationRequest, fast: bool) -> tuple[dict, dict, float]:
    pipeline.fast_path = fast
    if pipeline.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    output = pipeline.generate(request)
    if pipeline.device.type == "cuda":
        torch.cuda.synchronize()
    return output.timings, output.work, time.perf_counter() - started


def table(columns: list[tuple[str, dict, dict, float]]) -> list[str]:
    width = 24
    lines = [f"{'stage (s)':<{width}}" + "".join(f"{name:>18}" for name, *_ in columns)]
    for stage in STAGES:
        lines.append(f"{stage:<{width}}" + "".join(f"{timings.get(stage, 0.0):>18.3f}"
                                                    for _, timings, _, _ in columns))
    lines.append(f"{'total':<{width}}" + "".join(f"{total:>18.3f}" for *_, total in columns))
    lines.append("")
    lines.append(f"{'work':<{width}}" + "".join(f"{name:>18}" for name, *_ in columns))
    for key in ("encoded_frames", "decoded_frames", "dit_tokens", "dit_steps", "decoder_receptive_field"):
        lines.append(f"{key:<{width}}" + "".join(f"{work[key]:>18}" for _, _, work, _ in columns))
    for key in ("source", "conditioning"):
        lines.append(f"{'cache.' + key:<{width}}" + "".join(f"{work['cache'][key]:>18}" for _, _, work, _ in columns))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-size", action="store_true", help="real 2B shapes with random weights")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--checkpoints", type=Path, default=None, help="tiny-weight folder (default: parity)")
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--bars", type=int, default=8, help="region length in 4/4 bars (default 8)")
    parser.add_argument("--context-s", type=float, default=2.0, help="context each side of the region (s)")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    torch.manual_seed(0)
    if args.full_size:
        pipeline = full_size_pipeline(device, dtype)
    else:
        pipeline = Pipeline.from_checkpoints(args.checkpoints or tiny_checkpoints(), device=device, dtype=dtype)
    region_s = args.bars * 4 * 60.0 / args.bpm
    window_s = region_s + 2 * args.context_s
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "window.wav"
        context_window(source, window_s)
        request = GenerationRequest.from_dict({
            "task_type": "repaint", "src_audio": str(source), "caption": "warm lo-fi hip hop, dusty drums",
            "repainting_start": args.context_s, "repainting_end": args.context_s + region_s,
            "inference_steps": args.steps, "seed": 1, "bpm": int(args.bpm), "timesignature": "4"})
        pipeline.sources.entries.clear()
        pipeline.conditioning_cache.clear()
        upstream = run(pipeline, request, fast=False)
        first = run(pipeline, request, fast=True)
        ours = run(pipeline, request.replace(seed=2), fast=True)

    size = "full size, random weights" if args.full_size else "tiny weights"
    print(f"hot path: {args.bars}-bar repaint at {args.bpm:g} BPM ({region_s:g} s) in a {window_s:g} s window, "
          f"{args.steps} steps, {size}, {device.type} {str(dtype).replace('torch.', '')}")
    print()
    for line in table([("upstream", *upstream), ("ours, 1st", *first), ("ours, again", *ours)]):
        print(line)
    print()
    print(f"ratio (upstream / ours, again): {upstream[2] / ours[2]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
