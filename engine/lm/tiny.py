"""Tiny 5 Hz LM checkpoints in the published folder layout, made by our own tool.

`make_tiny_lm(folder, seed)` writes config.json (stock Qwen3, 2 layers, hidden 32),
model.safetensors (bf16, tied embeddings, random weights), a byte-level BPE tokenizer.json with
Qwen3's 26 added tokens (<|endoftext|> pad, <|im_end|> EOS, <think>, </think>, ...) followed by
the 65,535 `<|audio_code_N|>` tokens, tokenizer_config.json / special_tokens_map.json and our
own ChatML chat_template.jinja. Used by tests, benches and `make-tiny-checkpoints --with-lm`.
"""

from __future__ import annotations

from pathlib import Path

# Qwen3's added tokens in Qwen3's order; the first 14 are "special" (skipped by skip_special_tokens).
QWEN3_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)
N_SPECIAL_ADDED = 14
N_AUDIO_CODE_TOKENS = 65535

# Pre-tokenisation in Qwen2 style: contractions, letter runs (with one leading non-letter),
# single digits, punctuation runs, newlines, spaces. Digits are single tokens and the space
# before a number is its own token, which is what the FSM's numeric prefix trees expect.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_TRAINING_TEXT = """<think>
bpm: 120
caption: A warm lo-fi hip hop track with rhodes piano, soft drums and vinyl crackle.
  The mood is calm and dreamy with airy pads.
duration: 180
keyscale: F# minor
language: en
timesignature: 4
</think>
# Instruction
Generate audio semantic tokens based on the given conditions:
# Caption
gritty blues rock with electric guitar, harmonica and stomping drums
# Lyric
[Verse] [Chorus] [Bridge] [Instrumental]
bright energetic pop dance electronic ambient orchestral acoustic jazz funk soul metal
major minor vocals bass synth strings brass piano guitar
"""


def build_tokenizer():
    """The tiny tokenizer as a `transformers` fast tokenizer (not yet saved)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_TRAINING_TEXT] * 4, trainer=trainer)
    added = [AddedToken(t, special=i < N_SPECIAL_ADDED, normalized=False) for i, t in enumerate(QWEN3_ADDED_TOKENS)]
    added += [AddedToken(f"<|audio_code_{n}|>", special=True, normalized=False) for n in range(N_AUDIO_CODE_TOKENS)]
    tok.add_tokens(added)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   clean_up_tokenization_spaces=False, model_max_length=131072)
    fast.chat_template = CHAT_TEMPLATE
    return fast


_TOKENIZER_FILES: dict[str, bytes] = {}


def _write_tokenizer(folder: Path):
    """Save the tokenizer files (built once per process) and return the loaded tokenizer."""
    import json
    import tempfile

    from transformers import AutoTokenizer

    if not _TOKENIZER_FILES:
        with tempfile.TemporaryDirectory() as tmp:
            build_tokenizer().save_pretrained(tmp)
            config_path = Path(tmp) / "tokenizer_config.json"
            config = json.loads(config_path.read_text(encoding="utf-8"))
            # The fast tokenizer reads added tokens from tokenizer.json; the per-token block
            # would only add ~12 MB (the published folders carry it, nothing here needs it).
            config.pop("added_tokens_decoder", None)
            config["chat_template"] = CHAT_TEMPLATE
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
            (Path(tmp) / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
            for path in Path(tmp).iterdir():
                _TOKENIZER_FILES[path.name] = path.read_bytes()
    for name, data in _TOKENIZER_FILES.items():
        (folder / name).write_bytes(data)
    return AutoTokenizer.from_pretrained(str(folder), use_fast=True)


def make_tiny_lm(folder: str | Path, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Path:
    """Write a tiny random 5 Hz LM folder; returns the folder."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_tokenizer(folder)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, use_cache=True,
        initializer_range=0.5,  # peaky random logits, so sampling options visibly change tokens
    )
    config.architectures = ["Qwen3ForCausalLM"]
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.to(torch.bfloat16).save_pretrained(str(folder), safe_serialization=True)
    for stray in ("generation_config.json",):
        path = folder / stray
        if path.exists():
            path.unlink()
    return folder
