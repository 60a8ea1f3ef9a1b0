"""Per-stage wall time and peak memory of one text2music generation.

Run from the repository root:

    python bench/engine_stages.py                      # tiny parity weights, 30 s and 120 s, CPU
    python bench/engine_stages.py --seconds 30 --steps 8 --device cuda
    python bench/engine_stages.py --full-size --seconds 10 --steps 2   # real 2B shapes, random weights

A final "repaint" block (tiny weights only) runs the whole `Pipeline.generate` for a repaint of an
8-bar region at 120 BPM (16 s, 8..24 s) inside a 30 s synthetic source, and reports the wall time
of each pipeline stage (source/reference VAE encode, text encode, diffusion, decode, splice and
normalisation) from the progress events.

Stages (each row of the table):
  text encode   caption through the text encoder + lyric embedding + condition encoder (once)
  DiT step      one sampler step of the DiT through the engine's prepared loop (`DiTLoop`; mean over
                --steps; the first step also builds the cross-attention K/V cache and the loop's
                RoPE/mask/modulation tables, so "first" is shown separately). `bench/dit_loop.py`
                compares this loop with the previous per-step one.
  VAE decode    latents -> 48 kHz stereo (tiled, 256-frame windows, like the engine)

The "resident after load" line gives each model's weights on the run device (VAE weight norm
folded, FSQ tokenizer/detokenizer parked in CPU memory on CUDA, text encoder and VAE off the GPU
with --low-vram) and, on CUDA, the allocated VRAM; the last line the run's peak VRAM.
"peak MB" is the peak memory the stage itself added: CUDA `max_memory_allocated` on a GPU; on
CPU (Linux) the highest resident set sampled every 2 ms while the stage ran, minus the resident
set when it started (elsewhere: the growth of ru_maxrss, which reads 0 when an earlier stage had
already reached a higher peak). Numbers on the tiny parity weights
measure overheads, not model cost; `--full-size` builds the published 2B DiT architecture
(2,393,872,518 parameters), a full-width Qwen3-Embedding-0.6B and the full Oobleck VAE with
random weights (fp32 on CPU, about 13 GB of RAM; bf16 on CUDA). Keep CPU runs short with
--seconds/--steps. Timings include Python overhead and are wall-clock, single run.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.devices import resolve_device_dtype  # noqa: E402
from engine.models.acestep import AceStepConditionGenerationModel, AceStepConfig, DiTLoop  # noqa: E402
from engine.samplers import turbo_timesteps  # noqa: E402

PARITY_CHECKPOINTS = ROOT / "tests" / "data" / "parity" / "checkpoints"
CAPTION_TOKENS, LYRIC_TOKENS = 120, 400  # typical prompt lengths for the random-id full-size run


class StageMeter:
    """Context manager measuring wall time and peak memory of a block."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.rss_before = _resident_bytes()
            self.rss_peak = self.rss_before
            self.maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self._stop = threading.Event()
            self._sampler = threading.Thread(target=self._sample_rss, daemon=True)
            self._sampler.start()
        self.started = time.perf_counter()
        return self

    def _sample_rss(self):
        while not self._stop.wait(0.002):
            self.rss_peak = max(self.rss_peak, _resident_bytes())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
        else:
            self._stop.set()
            self._sampler.join()
            if self.rss_before:
                self.rss_peak = max(self.rss_peak, _resident_bytes())
                self.peak_mb = (self.rss_peak - self.rss_before) / 2 ** 20
            else:  # no /proc: growth of the process's peak resident set
                self.peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.maxrss_before) / 1024
        self.seconds = time.perf_counter() - self.started
        return False


def _resident_bytes() -> int:
    """Current resident set size from /proc (Linux), or 0 where there is none."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return 0


def _module_mb(module, device) -> float:
    """MB of a module's parameters and buffers that live on `device`'s type."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if t.device.type == device.type) / 2 ** 20


def resident_summary(loaded, device) -> str:
    """Per-model memory on the run device (after folding the VAE weight norm and parking the FSQ codec)."""
    from engine.models.vae import fold_weight_norm

    text, vae, dit = loaded[:3]
    fold_weight_norm(vae.model)  # `VAE.from_folder` does this; the random full-size VAE is built directly
    if device.type == "cuda" and not dit.codec_parked:
        dit.park_audio_codec()
    parts = {"DiT": _module_mb(dit, device), "text encoder": _module_mb(text.model, device),
             "VAE": _module_mb(vae.model, device)}
    text_out = ", ".join(f"{name} {mb:.0f} MB" for name, mb in parts.items())
    if device.type == "cuda":
        return f"{text_out}; torch.cuda.memory_allocated {torch.cuda.memory_allocated(device) / 2 ** 20:.0f} MB"
    return f"{text_out}; process RSS {_resident_bytes() / 2 ** 20:.0f} MB"


def load_tiny(device, dtype):
    from engine.models.text_encoder import TextEncoder
    from engine.models.vae import VAE

    text = TextEncoder.from_folder(PARITY_CHECKPOINTS / "Qwen3-Embedding-0.6B", device, dtype)
    vae = VAE.from_folder(PARITY_CHECKPOINTS / "vae", device, dtype)
    dit = AceStepConditionGenerationModel.from_folder(PARITY_CHECKPOINTS / "acestep-v15-turbo", device, dtype)
    ids_caption = text.tokenize(["# Instruction\nFill the audio semantic mask\n\n# Caption\nwarm lo-fi "
                                 "hip hop with dusty drums<|endoftext|>\n"], 256).ids
    ids_lyrics = text.tokenize(["# Languages\nen\n\n# Lyric\n[Instrumental]<|endoftext|>"], 2048).ids
    return text, vae, dit, ids_caption, ids_lyrics


def load_full_size(device, dtype):
    """Published architectures with random weights (no checkpoint files needed)."""
    from diffusers import AutoencoderOobleck
    from transformers import Qwen3Config, Qwen3Model

    from engine.models.text_encoder import TextEncoder
    from engine.models.vae import VAE

    torch.manual_seed(0)
    with torch.device("meta"):
        dit = AceStepConditionGenerationModel(AceStepConfig(is_turbo=True))
    dit = dit.to(dtype=dtype).to_empty(device=device)
    with torch.no_grad():
        for name, param in dit.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02)
    dit.eval().requires_grad_(False)
    dit.silence_latent = torch.randn(1, 15000, 64, device=device, dtype=dtype)

    qwen = Qwen3Config(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, intermediate_size=3072, vocab_size=151669, rope_theta=1e6,
                       tie_word_embeddings=True)
    qwen._attn_implementation = "sdpa"
    text_model = Qwen3Model(qwen).to(device=device, dtype=dtype).eval().requires_grad_(False)
    text = TextEncoder(None, text_model, device, dtype)
    oobleck = AutoencoderOobleck(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10],
                                 channel_multiples=[1, 2, 4, 8, 16], decoder_channels=128,
                                 decoder_input_channels=64, audio_channels=2, sampling_rate=48000)
    vae = VAE(oobleck.to(device=device, dtype=dtype).eval().requires_grad_(False), device, dtype)
    ids_caption = torch.randint(0, 151000, (1, CAPTION_TOKENS), device=device)
    ids_lyrics = torch.randint(0, 151000, (1, LYRIC_TOKENS), device=device)
    return text, vae, dit, ids_caption, ids_lyrics


@torch.no_grad()
def run_stages(text, vae, dit, ids_caption, ids_lyrics, seconds: float, steps: int, device, dtype,
               compile: bool = False) -> list:
    meter = StageMeter(device)
    frames = max(128, int(round(seconds, 1) * 48000) // 1920)
    rows = []
    with meter:
        caption_states = text.encode_captions(ids_caption).to(dtype)
        lyric_states = text.embed_lyrics(ids_lyrics).to(dtype)
        refer = dit.silence_latent[:, :dit.config.timbre_fix_frame]
        enc, _ = dit.encode_conditions(caption_states, torch.ones_like(ids_caption, dtype=torch.bool), lyric_states,
                                       torch.ones_like(ids_lyrics, dtype=torch.bool), refer,
                                       torch.zeros(1, dtype=torch.long, device=device))
    rows.append(("text encode", meter.seconds, meter.peak_mb))

    src = dit.silence_latent[:, :frames]
    context = dit.context_latents(src, torch.ones_like(src), torch.zeros(1, dtype=torch.bool, device=device))
    x = torch.randn(1, frames, 64, device=device, dtype=dtype)
    timesteps = turbo_timesteps(3.0, steps).to(dtype)
    schedule = timesteps.float().tolist() + [0.0]
    step_times, step_peak = [], 0.0
    loop = None
    for k in range(len(schedule) - 1):
        with meter:
            if loop is None:  # the engine's loop: K/V cache, RoPE, masks and modulation set up once
                cache = dit.decoder.cross_attention_cache(enc)
                loop = DiTLoop(dit.decoder, timesteps.to(device), frames,
                               lambda phase, cache=cache: (cache, context), compile)
            v = loop(x, k)
            x = x - v * (schedule[k] - schedule[k + 1])
        step_times.append(meter.seconds)
        step_peak = max(step_peak, meter.peak_mb)
    rows.append(("DiT step (first)", step_times[0], step_peak))
    if len(step_times) > 1:
        rows.append((f"DiT step (mean of {len(step_times) - 1})", sum(step_times[1:]) / (len(step_times) - 1),
                     step_peak))
    with meter:
        wave = vae.decode(x)
    rows.append(("VAE decode", meter.seconds, meter.peak_mb))
    assert wave.shape[-1] == frames * 1920
    return [(f"{seconds:g} s ({frames} frames)",) + row for row in rows]


def run_repaint(steps: int, device, dtype, context_s: float = 30.0, region=(8.0, 24.0)) -> list:
    """Time each stage of a full repaint through `Pipeline.generate` on the tiny weights."""
    import tempfile

    import numpy as np

    from engine.audio_io import write_audio
    from engine.pipeline import Pipeline
    from engine.request import GenerationRequest

    t = np.arange(int(context_s * 48000)) / 48000
    wave = 0.3 * np.sin(2 * np.pi * 110 * t) * (1 + np.sign(np.sin(2 * np.pi * 2 * t))) / 2  # 120 BPM pulses
    pipeline = Pipeline.from_checkpoints(PARITY_CHECKPOINTS, dit="acestep-v15-turbo", device=device, dtype=dtype)
    stage_seconds: dict[str, float] = {}
    clock = {"stage": None, "at": time.perf_counter()}

    def mark(stage):
        """Close the running stage and start `stage` (None = the end)."""
        now = time.perf_counter()
        if clock["stage"] is not None:
            stage_seconds[clock["stage"]] = stage_seconds.get(clock["stage"], 0.0) + now - clock["at"]
        clock.update(stage=stage, at=now)

    with tempfile.TemporaryDirectory() as folder:
        source = write_audio(Path(folder) / "source.wav", np.stack([wave, wave]).astype(np.float32))
        request = GenerationRequest.from_dict(dict(task_type="repaint", src_audio=source, caption="bench",
                                                   repainting_start=region[0], repainting_end=region[1],
                                                   inference_steps=steps, seed=1))
        meter = StageMeter(device)
        with meter:
            pipeline.generate(request, progress=lambda event: mark(event.stage))
        mark(None)
    label = f"repaint {region[1] - region[0]:g} s in {context_s:g} s"
    rows = [(label, f"  {stage}", seconds, 0.0) for stage, seconds in stage_seconds.items()]
    rows.append((label, "total (generate)", meter.seconds, meter.peak_mb))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 120.0], help="request durations")
    parser.add_argument("--steps", type=int, default=8, help="sampler steps (turbo schedule, shift 3)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--full-size", action="store_true", help="real 2B architecture with random weights")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DiT step (as --compile on)")
    parser.add_argument("--low-vram", action="store_true",
                        help="text encoder and VAE in CPU memory except during their stages (the engine's "
                             "--low-vram)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    started = time.perf_counter()
    loaded = load_full_size(device, dtype) if args.full_size else load_tiny(device, dtype)
    if args.low_vram and device.type != "cpu":  # what the engine's --low-vram does (engine/vram.py)
        from engine.vram import Offloaded

        text, vae = loaded[:2]
        loaded = (Offloaded(text, text.model, device), Offloaded(vae, vae.model, device), *loaded[2:])
    load_s = time.perf_counter() - started
    kind = "full-size 2B (random weights)" if args.full_size else "tiny parity weights"
    print(f"# {kind} on {device} {str(dtype).replace('torch.', '')}, {args.steps} steps, "
          f"threads {torch.get_num_threads()}, load {load_s:.1f} s, compile {'on' if args.compile else 'off'}"
          f"{', low-vram' if args.low_vram else ''}")
    print(f"# resident after load: {resident_summary(loaded, device)}")
    print(f"{'request':<22} {'stage':<24} {'seconds':>10} {'peak MB':>10}")
    for seconds in args.seconds:
        for request, stage, wall, peak in run_stages(*loaded, seconds, args.steps, device, dtype, args.compile):
            print(f"{request:<22} {stage:<24} {wall:>10.3f} {peak:>10.1f}", flush=True)
    if device.type == "cuda":
        print(f"# peak VRAM of the whole run: {torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MB "
              f"(allocated), {torch.cuda.max_memory_reserved(device) / 2 ** 20:.0f} MB (reserved)")
    if not args.full_size:
        for request, stage, wall, peak in run_repaint(args.steps, device, dtype):
            print(f"{request:<22} {stage:<24} {wall:>10.3f} {peak:>10.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
