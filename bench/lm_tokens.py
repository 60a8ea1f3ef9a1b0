"""LM planner speed: tokens/s in phase 1 (CoT) and phase 2 (codes), and time to the first code.

How to run (from the repository root, PYTHONPATH=.):
    python bench/lm_tokens.py                      # tiny random LM (made on the fly), CPU
    python bench/lm_tokens.py --full-size          # 0.6B architecture (hidden 1024, 28 layers, 16/8 heads,
                                                   # MLP 3072, vocab 217,204) with random weights
    python bench/lm_tokens.py --device cuda --duration 30 --cfg 2.0

What the figures mean (one 30 s request, thinking on, no user metas, top-k off, default sampling):
    phase 1 tok/s   chain-of-thought tokens per second (single row, no CFG), prefill included
    phase 2 tok/s   audio-code tokens per second (two rows when cfg > 1), prefill included
    first code s    seconds from the start of phase 2 to the first code token (prefill + 1 step)
    total s         the whole plan (phase 1 + phase 2); 30 s of audio = 150 codes
Random weights write garbage captions, so phase 1 runs to the caption budget (--caption-tokens);
the codes phase is exact (int(duration * 5) codes) whatever the weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_full_size(folder: Path, seed: int) -> None:
    """The 0.6B architecture with random weights (tokenizer from the tiny tool, vocab padded to 217,204)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from engine.lm.tiny import make_tiny_lm

    make_tiny_lm(folder, seed)
    (folder / "model.safetensors").unlink()
    config = Qwen3Config(vocab_size=217204, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                         rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_cache=True,
                         eos_token_id=None, pad_token_id=None)
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(seed)
    with torch.device("cpu"):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(folder), safe_serialization=True)
    gen = folder / "generation_config.json"
    if gen.exists():
        gen.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full-size", action="store_true", help="0.6B architecture with random weights")
    parser.add_argument("--folder", default=None, help="use an existing LM folder instead of a random one")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of audio to plan (default 30)")
    parser.add_argument("--cfg", type=float, default=2.0, help="lm_cfg_scale (default 2.0)")
    parser.add_argument("--caption-tokens", type=int, default=64, help="caption budget for random weights")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from engine.lm.generate import generate_plan
    from engine.lm.planner import Planner, call_from_request
    from engine.lm.tiny import make_tiny_lm
    from engine.request import GenerationRequest

    with tempfile.TemporaryDirectory() as tmp:
        if args.folder:
            folder = Path(args.folder)
        else:
            folder = Path(tmp) / "acestep-5Hz-lm-0.6B"
            started = time.perf_counter()
            (make_full_size if args.full_size else make_tiny_lm)(folder, args.seed)
            size = "0.6B-size" if args.full_size else "tiny"
            print(f"made {size} random LM in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        planner = Planner(folder, device=args.device)
        took = time.perf_counter() - started
        print(f"loaded {folder.name} on {planner.lm.device} ({planner.lm.dtype}) in {took:.1f} s")
        request = GenerationRequest.from_dict({"caption": "warm lo-fi hip hop with rhodes", "thinking": True,
                                               "duration": args.duration, "lm_cfg_scale": args.cfg,
                                               "seed": args.seed})
        call = call_from_request(request, planner.lm.tables)
        call.caption_max_tokens = args.caption_tokens
        call.user_metadata = None  # let phase 1 run: the bench times both phases

        marks: dict[str, float] = {}

        def progress(event) -> None:
            now = time.perf_counter()
            marks.setdefault(f"{event.stage}_first", now)
            marks[f"{event.stage}_last"] = now
            marks[f"{event.stage}_count"] = event.step

        started = time.perf_counter()
        result = generate_plan(planner.lm, call, progress=progress)
        total = time.perf_counter() - started
        cot_tokens = len(result.phases[0].generated_ids)
        code_tokens = len(result.phases[-1].generated_ids)
        phase1 = marks["lm_cot_last"] - started
        phase2 = marks["lm_codes_last"] - marks["lm_cot_last"]
        first_code = marks["lm_codes_first"] - marks["lm_cot_last"]
        print(f"phase 1: {cot_tokens} tokens in {phase1:.2f} s = {cot_tokens / phase1:.1f} tok/s")
        print(f"phase 2: {code_tokens} tokens in {phase2:.2f} s = {code_tokens / phase2:.1f} tok/s "
              f"(cfg {args.cfg}, {2 if args.cfg > 1 else 1} rows)")
        print(f"first code after {first_code:.3f} s; total {total:.2f} s; {len(result.audio_code_values)} codes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
