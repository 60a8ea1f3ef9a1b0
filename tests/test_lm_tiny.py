"""The planner on a tiny random-weight LM made by engine.lm.tiny: structure, constraints, options."""

import json

import pytest

from engine.lm import constants as C
from engine.lm.model import LanguageModel
from engine.lm.planner import Planner, apply_plan, call_from_request
from engine.lm.tasks import format_caption, simple_mode, understand_codes
from engine.request import GenerationRequest, RequestError, is_valid_keyscale
from engine.types import Cancelled, CheckpointError
from tests.lm_utils import one_torch_thread  # noqa: F401 (autouse fixture)

SHORT = 12  # caption token budget: random weights never end a caption on their own


@pytest.fixture(scope="module")
def tiny_root(tiny_lm_checkpoints):
    """`make_tiny_lm(root / "acestep-5Hz-lm-0.6B", seed=3)`, made once per session (tests/conftest.py)."""
    return tiny_lm_checkpoints


@pytest.fixture(scope="module")
def planner(tiny_root):
    return Planner.from_checkpoints(tiny_root, "0.6B", device="cpu")


def plan(planner, **fields):
    return planner.plan(GenerationRequest.from_dict({"caption": "calm piano", **fields}), caption_max_tokens=SHORT)


def test_tiny_folder_has_the_published_layout(tiny_root):
    folder = tiny_root / "acestep-5Hz-lm-0.6B"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["tie_word_embeddings"] is True
    from safetensors import safe_open
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
        assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
        assert str(fh.get_tensor("model.norm.weight").dtype) == "torch.bfloat16"


def test_tiny_tokenizer_has_qwen3_specials_and_all_code_tokens(planner):
    lm = planner.lm
    tok = lm.tokenizer
    assert config_vocab(lm) == len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for text in ("<think>", "</think>", "<|im_start|>"):
        assert len(tok.encode(text, add_special_tokens=False)) == 1
    assert lm.tables.audio_code_ids.numel() == 64000
    assert len(lm.tables.code_value_of_token) == 65535
    assert lm.tables.encode(" 120\n") == [lm.tables.space_token, *[lm.tables.digit_tokens[d] for d in (1, 2, 0)],
                                          lm.tables.newline_token]


def config_vocab(lm):
    return lm.model.config.vocab_size


def test_free_cot_always_parses_within_ranges(planner):
    for seed in range(6):
        meta = plan(planner, seed=seed).metadata
        assert set(meta) == set(C.COT_KEYS), meta
        assert C.BPM_MIN <= meta["bpm"] <= C.BPM_MAX
        assert C.DURATION_MIN <= meta["duration"] <= planner.lm.tables.duration_max
        assert is_valid_keyscale(meta["keyscale"])
        assert meta["language"] in C.VALID_LANGUAGES
        assert meta["timesignature"] in C.VALID_TIME_SIGNATURES
        assert meta["caption"].strip()


def test_candidate_sets_hold_over_many_seeds(planner):
    constraints = {"bpm": [118, 124], "keyscale": ["A minor", "C major"], "timesignature": ["3", "4"],
                   "language": ["en", "de"], "duration": [20, 30]}
    seen = {key: set() for key in constraints}
    for seed in range(20):
        meta = plan(planner, seed=seed, lm_constraints=constraints).metadata
        assert 118 <= meta["bpm"] <= 124
        assert meta["keyscale"] in constraints["keyscale"]
        assert meta["timesignature"] in constraints["timesignature"]
        assert meta["language"] in constraints["language"]
        assert 20 <= meta["duration"] <= 30
        for key in constraints:
            seen[key].add(meta[key])
    assert len(seen["bpm"]) > 1 and len(seen["keyscale"]) > 1  # the choice stays the model's


def test_given_fields_are_forced_exactly_and_win_over_constraints(planner):
    result = plan(planner, seed=5, bpm=97, keyscale="E♭ major", timesignature="3/4",
                  lm_constraints={"bpm": [118, 124], "language": ["ja"]})
    meta = result.metadata
    assert meta["bpm"] == 97 and meta["keyscale"] == "E♭ major" and meta["timesignature"] == "3/4"
    assert meta["language"] == "ja"
    assert "timesignature: 3\n" in result.cot_text  # phase 2 re-serialises N/4 as N


def test_code_count_is_exact_and_codes_are_valid(planner):
    for duration, cfg in ((4.4, 2.0), (3.0, 1.0)):
        result = plan(planner, seed=1, thinking=True, duration=duration, lm_cfg_scale=cfg)
        assert len(result.audio_code_values) == int(duration * 5)
        assert all(0 <= c <= C.MAX_AUDIO_CODE for c in result.audio_code_values)
        assert result.metadata["duration"] == int(duration)


def test_all_metas_given_skips_phase_one(planner):
    result = plan(planner, seed=2, thinking=True, bpm=90, keyscale="D minor", timesignature="4", duration=2.0)
    assert [p["generation_phase"] for p in result.phases] == ["codes"]
    assert result.metadata == {"bpm": 90, "keyscale": "D minor", "timesignature": "4", "duration": 2}
    assert len(result.audio_code_values) == 10


def codes_for(planner, **fields):
    base = dict(seed=11, thinking=True, bpm=90, keyscale="D minor", timesignature="4", duration=3.0)
    base.update(fields)
    return plan(planner, **base).audio_code_values


def test_same_seed_same_plan_and_options_change_what_they_should(planner):
    reference = codes_for(planner)
    assert codes_for(planner) == reference
    assert codes_for(planner, seed=12) != reference
    assert codes_for(planner, lm_temperature=2.0) != reference
    assert codes_for(planner, lm_top_k=1) != reference
    assert codes_for(planner, lm_cfg_scale=1.0) != reference
    assert codes_for(planner, lm_top_k=1, lm_cfg_scale=1.0) != codes_for(planner, lm_top_k=1, lm_cfg_scale=2.0)
    greedy = codes_for(planner, lm_top_k=1)
    assert codes_for(planner, lm_top_k=1, seed=99, lm_temperature=3.0) == greedy  # top-k 1 ignores the RNG


def test_repetition_penalty_pushes_seen_tokens_down():
    import torch

    from engine.lm.decode import apply_repetition_penalty
    scores = torch.tensor([2.0, -1.0, 0.5, 3.0])
    out = apply_repetition_penalty(torch.tensor([0, 1, 1]), scores.clone(), 2.0)
    assert out.tolist() == [1.0, -2.0, 0.5, 3.0]
    assert torch.equal(apply_repetition_penalty(torch.tensor([0]), scores.clone(), 1.0), scores)


def test_apply_plan_merges_metas_caption_and_codes(planner):
    request = GenerationRequest.from_dict({"caption": "calm piano", "thinking": True, "seed": 4, "bpm": 100,
                                           "duration": 3.0})
    result = planner.plan(request, caption_max_tokens=SHORT)
    merged = apply_plan(request, result)
    assert merged.task_type == "cover" and merged.audio_codes == result.audio_codes
    assert merged.bpm == 100 and merged.duration == 3.0  # given fields stay
    assert merged.keyscale == result.metadata["keyscale"]
    assert merged.timesignature == result.metadata["timesignature"]
    assert merged.caption == result.metadata["caption"]
    assert merged.vocal_language == result.metadata["language"]
    kept = apply_plan(request.replace(use_cot_caption=False, use_cot_language=False), result)
    assert kept.caption == "calm piano" and kept.vocal_language == "unknown"
    no_codes = apply_plan(request, result.to_dict() | {"audio_code_values": [], "audio_codes": ""})
    assert no_codes.task_type == "text2music" and no_codes.audio_codes is None
    dump = result.dump_tensors()
    assert bytes(dump["lm_cot_text"].tolist()).decode("utf-8") == result.cot_text
    assert dump["lm_audio_codes"].tolist() == result.audio_code_values


def test_progress_and_cancel(planner):
    events = []
    plan_request = GenerationRequest.from_dict({"caption": "x", "thinking": True, "duration": 2.0, "seed": 1})
    planner.plan(plan_request, progress=events.append, caption_max_tokens=SHORT)
    stages = [e.stage for e in events]
    assert "lm_cot" in stages and "lm_codes" in stages
    codes = [e for e in events if e.stage == "lm_codes"]
    assert codes[-1].step == codes[-1].total == 10
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        planner.plan(plan_request, cancel=cancel, caption_max_tokens=SHORT)
    assert calls["n"] == 4


def test_should_plan_follows_upstream_task_rules():
    assert Planner.should_plan(GenerationRequest.from_dict({"caption": "x"}))
    off = {"use_cot_metas": False, "use_cot_caption": False, "use_cot_language": False}
    assert not Planner.should_plan(GenerationRequest.from_dict({"caption": "x", **off}))
    assert Planner.should_plan(GenerationRequest.from_dict({"caption": "x", "thinking": True, **off}))
    cover = GenerationRequest.from_dict({"task_type": "cover", "src_audio": "a.wav", "thinking": True})
    assert not Planner.should_plan(cover)
    assert call_from_request(GenerationRequest.from_dict({"caption": "x", "thinking": True,
                                                          "audio_codes": [1, 2]})).infer_type == "dit"


@pytest.mark.parametrize("constraints,needle", [
    ({"bpm": [124, 118]}, "empty"), ({"bpm": 120}, "pair"), ({"bpm": [400, 500]}, "outside"),
    ({"keyscale": ["H minor"]}, "keyscale"), ({"timesignature": ["5"]}, "timesignature"),
    ({"language": []}, "non-empty"), ({"tempo": [1, 2]}, "unknown field"), ({"duration": ["a", 3]}, "number"),
])
def test_bad_constraints_are_rejected_with_the_reason(constraints, needle):
    with pytest.raises(RequestError) as info:
        GenerationRequest.from_dict({"caption": "x", "lm_constraints": constraints})
    assert needle in str(info.value)


def test_text_tasks_return_parsed_structures(planner):
    lm = planner.lm
    formatted = format_caption(lm, "latin pop", "[Verse]\nla la", user_metadata={"bpm": 101, "language": "es"},
                               seed=1, max_new_tokens=90, caption_max_tokens=SHORT)
    assert formatted.metadata["bpm"] == 101 and formatted.caption
    assert isinstance(formatted.lyrics, str) and formatted.lyrics
    assert "</think>" in formatted.output_text
    idea = simple_mode(lm, "a sad waltz about the sea", instrumental=True, vocal_language="en", seed=2,
                       max_new_tokens=90, caption_max_tokens=SHORT)
    assert idea.metadata["language"] == "en" and idea.caption and idea.to_dict()["instrumental"] is True
    assert set(C.COT_KEYS) <= set(idea.metadata)
    heard = understand_codes(lm, [5, 17, 63999], seed=3, max_new_tokens=90, caption_max_tokens=SHORT)
    assert set(C.COT_KEYS) <= set(heard.metadata)
    assert "<|audio_code_" not in heard.output_text.split("</think>", 1)[1]
    with pytest.raises(ValueError):
        understand_codes(lm, "")
    via_planner = planner.understand_codes([5, 17, 63999], seed=3, max_new_tokens=90, caption_max_tokens=SHORT)
    assert via_planner.output_text == heard.output_text  # same seed, same text


def test_apply_plan_keeps_source_task_lengths(planner):
    request = GenerationRequest.from_dict({"task_type": "lego", "src_audio": "a.wav", "caption": "x",
                                           "track_name": "guitar"})
    merged = apply_plan(request, {"metadata": {"duration": 30, "bpm": 120, "caption": "new"}})
    assert merged.duration is None and merged.bpm == 120 and merged.caption == "new"
    assert merged.task_type == "lego"


def test_loader_errors_are_one_clear_line(tmp_path, tiny_root):
    with pytest.raises(CheckpointError, match="not found"):
        LanguageModel(tmp_path / "missing", device="cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in (tiny_root / "acestep-5Hz-lm-0.6B").iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError) as info:
        LanguageModel(broken, device="cpu")
    assert "model.safetensors" in str(info.value) and "\n" not in str(info.value)
    (broken / "model.safetensors").write_bytes((tiny_root / "acestep-5Hz-lm-0.6B" / "model.safetensors").read_bytes())
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"vocab_size": 1000}))
    with pytest.raises(CheckpointError, match="vocab_size"):
        LanguageModel(broken, device="cpu")
