"""Token-exact parity of the 5 Hz LM planner against tests/data/parity-lm (upstream's own run)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from engine.lm.generate import generate_plan
from engine.lm.model import LanguageModel
from engine.lm.planner import call_from_request
from engine.request import GenerationRequest
from tests.cli_utils import run_cli
from tests.conftest import PARITY_LM
from tests.lm_utils import one_torch_thread  # noqa: F401 (autouse fixture)

CASES = sorted(p.stem for p in (PARITY_LM / "cases").glob("*.json"))
LM_DIR = PARITY_LM / "checkpoints" / "acestep-5Hz-lm-0.6B"
TRACE_KEYS = ("state", "state_after", "queue", "accumulated_token_ids", "caption_after_newline",
              "caption_ending", "n_allowed", "allowed", "token")


@pytest.fixture(scope="module")
def lm():
    return LanguageModel(LM_DIR, device="cpu")


def load_case(name):
    return json.loads((PARITY_LM / "cases" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def runs(lm):
    """Every case run once (exact FSM, guard off) with a per-step record."""
    out = {}
    for name in CASES:
        case = load_case(name)
        call = call_from_request(GenerationRequest.from_dict(case["request"]), lm.tables)
        call.guard = False
        out[name] = generate_plan(lm, call, record=True)
    return out


def test_fsm_tables_match_the_fixture(lm):
    want = json.loads((PARITY_LM / "fsm_tables.json").read_text())
    got = lm.tables.as_dict()
    for key in ("vocab_size", "eos_token_id", "pad_token_id", "newline_token", "backtick_token", "period_token",
                "space_token", "digit_tokens", "think_end_tag_tokens", "n_audio_code_tokens_valid", "duration_max"):
        assert got[key] == want[key], key
    ids = lm.tables.audio_code_ids.tolist()
    assert [[ids[0], ids[-1] + 1]] == want["audio_code_token_ids_valid"] and len(ids) == ids[-1] + 1 - ids[0]
    for key in ("bpm_prefix_tree", "duration_prefix_tree", "timesig_prefix_tree", "keyscale_prefix_tree",
                "language_prefix_tree"):
        as_map = lambda rows: {tuple(r["prefix"]): sorted(r["allowed"]) for r in rows}  # noqa: E731
        assert as_map(got[key]) == as_map(want[key]), key
    for state, entry in want["fixed_strings"].items():
        assert lm.tables.fixed_string_walk(entry["string"]) == entry["fsm_tokens"], state
        assert lm.tables.encode(entry["string"]) == entry["encode_tokens"], state


@pytest.mark.parametrize("name", CASES)
def test_request_maps_to_upstreams_lm_call(name, lm):
    case = load_case(name)
    call = call_from_request(GenerationRequest.from_dict(case["request"]), lm.tables)
    kwargs = case["lm_call"]["kwargs"]
    for key in ("caption", "lyrics", "infer_type", "temperature", "cfg_scale", "negative_prompt", "top_k", "top_p",
                "target_duration", "user_metadata", "use_cot_caption", "use_cot_language", "use_cot_metas",
                "use_constrained_decoding"):
        assert getattr(call, key) == kwargs[key], key
    assert call.repetition_penalty == kwargs.get("repetition_penalty", 1.0)


@pytest.mark.parametrize("name", CASES)
def test_case_reproduces_exactly(name, runs):
    case, result = load_case(name), runs[name]
    assert [p.generation_phase for p in result.phases] == case["derived"]["phases_run"]
    assert result.metadata == case["result"]["metadata"]
    assert result.audio_codes == case["result"]["audio_codes"]
    assert result.audio_code_values == case["result"]["audio_code_values"]
    assert result.cot_text == case["derived"]["phase2_cot_text"]
    for got, want in zip(result.phases, case["phases"], strict=True):
        assert got.prompt == want["prompt"]
        assert got.prompt_ids == want["prompt_ids"]
        assert got.uncond_prompt == want["uncond_prompt"]
        if want.get("cfg_batch"):
            assert got.input_ids == want["cfg_batch"]["input_ids"]
            assert got.attention_mask == want["cfg_batch"]["attention_mask"]
        assert got.max_new_tokens == want["max_new_tokens"]
        assert got.target_codes == want["target_codes"]
        assert got.generated_ids == want["generated_ids"]
        assert got.output_text == want["output_text"]
        assert len(got.record.steps) == len(want["steps"])
        for i, (ours, theirs) in enumerate(zip(got.record.steps, want["steps"])):
            expected = {k: theirs[k] for k in TRACE_KEYS if k in theirs}
            assert {k: ours[k] for k in TRACE_KEYS if k in ours} == expected, f"{want['generation_phase']} step {i}"


@pytest.mark.parametrize("name", CASES)
def test_logits_match_within_fp32_noise(name, runs):
    expected = load_file(str(PARITY_LM / "cases" / f"{name}.expected.safetensors"))
    for phase in runs[name].phases:
        p, rec = phase.generation_phase, phase.record
        assert (rec.logits_step0 - expected[f"{p}.logits_step0"]).abs().max() <= 1e-4
        assert (torch.stack(rec.top5_logits) - expected[f"{p}.top5_logits"]).abs().max() <= 1e-4
        assert (torch.stack(rec.chosen_raw_logits) - expected[f"{p}.chosen_raw_logits"]).abs().max() <= 1e-4
        assert torch.equal(torch.stack(rec.top5_ids), expected[f"{p}.top5_ids"])
        margin, want = torch.tensor(rec.final_margin), expected[f"{p}.final_margin"]
        assert torch.equal(torch.isinf(margin), torch.isinf(want))
        finite = torch.isfinite(want)
        assert (margin[finite] - want[finite]).abs().max() <= 1e-4


def test_plan_cli_reproduces_a_case(tmp_path):
    case = load_case("cot_codes_cfg2_10s")
    request = tmp_path / "req.json"
    request.write_text(json.dumps(case["request"]))
    out = tmp_path / "plan.json"
    proc = run_cli("plan", "--checkpoints", str(LM_DIR.parent), "--request", str(request), "--out", str(out),
                   "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(out.read_text())
    assert plan["metadata"] == case["result"]["metadata"]
    assert plan["audio_code_values"] == case["result"]["audio_code_values"]
    assert [p["generated_ids"] for p in plan["phases"]] == [p["generated_ids"] for p in case["phases"]]
    assert [p["prompt"] for p in plan["phases"]] == [p["prompt"] for p in case["phases"]]
    assert plan["phases"][1]["uncond_prompt"] == case["phases"][1]["uncond_prompt"]


@pytest.mark.parametrize("args,needle", [
    (["--lm", "9B"], "unknown LM"),
    (["--checkpoints", "/nonexistent/dir"], "not found"),
])
def test_plan_cli_errors_are_one_line(tmp_path, args, needle):
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"caption": "x", "thinking": True}))
    base = ["--checkpoints", str(LM_DIR.parent), "--request", str(request), "--out", str(tmp_path / "p.json")]
    proc = run_cli("plan", *base, *args)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_plan_cli_rejects_a_bad_request(tmp_path):
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"caption": "x", "lm_constraints": {"bpm": [200, 100]}}))
    proc = run_cli("plan", "--checkpoints", str(LM_DIR.parent), "--request", str(request),
                   "--out", str(tmp_path / "p.json"))
    assert proc.returncode == 2 and "lm_constraints" in proc.stderr
