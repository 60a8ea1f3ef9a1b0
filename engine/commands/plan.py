"""`ace-companion plan`: run only the 5 Hz LM planner for a request and write PLAN.json.

PLAN.json holds {"metadata", "audio_code_values", "audio_codes", "cot_text", "lm", "seed",
"phases": [{"generation_phase", "prompt", "uncond_prompt", "generated_ids"}]}.
Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", metavar="DIR", default=None,
                        help="checkpoint root (default: $ACE_COMPANION_CHECKPOINTS or ./checkpoints)")
    parser.add_argument("--request", metavar="REQ.json", required=True,
                        help="request JSON (GenerationRequest fields; duration -1 = not given)")
    parser.add_argument("--out", metavar="PLAN.json", required=True, help="where to write the plan")
    parser.add_argument("--lm", default="acestep-5Hz-lm-0.6B",
                        help="LM folder name or size: 0.6B, 1.7B, 4B (default: acestep-5Hz-lm-0.6B)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="where to run the LM (default: cuda if available, else cpu)")
    parser.add_argument("--duration-max", type=int, default=None,
                        help="longest duration the LM may choose, seconds (default: 240 on CPU, 480/600 on GPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    from engine.request import GenerationRequest, RequestError
    from engine.types import EngineError, ProgressEvent

    try:
        request = GenerationRequest.from_json_file(args.request)
    except RequestError as exc:
        print(f"ace-companion plan: bad request: {exc}", file=sys.stderr)
        return 2
    try:
        from engine.lm.planner import Planner

        if not Planner.should_plan(request):
            print(f"ace-companion plan: task '{request.task_type}' does not use the LM "
                  f"(and thinking / use_cot_* are off)", file=sys.stderr)
            return 2
        planner = Planner.from_checkpoints(args.checkpoints, args.lm, device=args.device,
                                           duration_max=args.duration_max)
    except EngineError as exc:
        print(f"ace-companion plan: {exc}", file=sys.stderr)
        return 2

    last = {"stage": None}

    def progress(event: ProgressEvent) -> None:
        if args.quiet:
            return
        if event.stage != last["stage"] or event.step == event.total or event.step % 50 == 0:
            last["stage"] = event.stage
            print(f"{event.stage}: {event.step}/{event.total} {event.message}", file=sys.stderr)

    try:
        plan = planner.plan(request, progress=progress)
    except (EngineError, RequestError) as exc:
        print(f"ace-companion plan: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(plan.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    except OSError as exc:
        print(f"ace-companion plan: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"wrote {out} ({len(plan.audio_code_values)} codes; metadata {plan.metadata})", file=sys.stderr)
    return 0
