"""`ace-companion make-tiny-checkpoints DIR`: tiny random checkpoints in the published layout.

Every folder the engine loads is written with the same sub-folder names, file names, key
names and config fields as the real download, but with tiny widths and seeded random
weights (a few MB each), so the whole pipeline can be exercised in seconds on a CPU:

    DIR/acestep-v15-turbo*/ acestep-v15-sft/ acestep-v15-base/   DiT: config.json, model.safetensors,
                                                                  silence_latent.pt
    DIR/acestep-v15-xl-{turbo,sft,base}/   XL DiT: 4 shards model-0000N-of-00004.safetensors +
                                           model.safetensors.index.json, like the published XL repos
    DIR/loras/tiny-xl-turbo-lora/   a PEFT LoRA for the tiny XL turbo DiT (upstream's trainer format)
    DIR/vae/                    diffusers AutoencoderOobleck (real hop 1920, 64 latent channels)
    DIR/Qwen3-Embedding-0.6B/   transformers Qwen3Model + byte-level BPE tokenizer
    DIR/acestep-5Hz-lm-*/       with --with-lm, written by engine.lm.tiny.make_tiny_lm

The DiT architecture equals the parity checkpoints in tests/data/parity (hidden 64, 2 layers); the
XL folders equal tests/data/parity-xl (DiT width 80, condition encoder width 64).
Nothing here is a trained model: the audio it renders is noise.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from engine.checkpoints import DIT_MODELS, LM_MODELS, TEXT_ENCODER_DIR, TINY_MARKER, TINY_WARNING, VAE_DIR

# The parity checkpoints' DiT config (tests/data/parity/checkpoints/acestep-v15-turbo/config.json).
TINY_DIT_CONFIG = {
    "architectures": ["AceStepConditionGenerationModel"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "audio_acoustic_hidden_dim": 64,
    "data_proportion": 0.5,
    "dtype": "float32",
    "fsq_dim": 64,
    "fsq_input_levels": [8, 8, 8, 5, 5, 5],
    "fsq_input_num_quantizers": 1,
    "head_dim": 16,
    "hidden_act": "silu",
    "hidden_size": 64,
    "in_channels": 192,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "layer_types": ["sliding_attention", "full_attention"],
    "lyric_alignment_layers_config": None,
    "max_position_embeddings": 32768,
    "model_type": "acestep",
    "num_attention_heads": 4,
    "num_attention_pooler_hidden_layers": 1,
    "num_audio_decoder_hidden_layers": 24,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "num_lyric_encoder_hidden_layers": 2,
    "num_timbre_encoder_hidden_layers": 2,
    "patch_size": 2,
    "pool_window_size": 5,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": 4,
    "text_hidden_dim": 32,
    "timbre_fix_frame": 750,
    "timbre_hidden_dim": 64,
    "timestep_mu": -0.4,
    "timestep_sigma": 1.0,
    "transformers_version": "4.57.6",
    "use_cache": True,
    "use_sliding_window": True,
    "vocab_size": 64003,
}

# The parity-xl checkpoints' XL changes (tests/data/parity-xl): a DiT wider than its condition encoder,
# attention width (6 x 16) different from the hidden size.
TINY_XL_CHANGES = {
    "hidden_size": 80,
    "intermediate_size": 176,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "encoder_hidden_size": 64,
    "encoder_intermediate_size": 128,
    "encoder_num_attention_heads": 4,
    "encoder_num_key_value_heads": 2,
}
XL_SHARDS = 4
TINY_LORA, TINY_LORA_DIT = "tiny-xl-turbo-lora", "acestep-v15-xl-turbo"  # loras/<name>/ for that DiT

# The parity VAE: real hop (2*4*4*6*10 = 1920 samples per latent frame), narrow decoder.
# encoder_hidden_size stays 128 because diffusers ties it to the 2 x 64 mean/scale output.
TINY_VAE_CONFIG = {
    "audio_channels": 2,
    "channel_multiples": [1, 1, 1, 1, 1],
    "decoder_channels": 8,
    "decoder_input_channels": 64,
    "downsampling_ratios": [2, 4, 4, 6, 10],
    "encoder_hidden_size": 128,
    "sampling_rate": 48000,
}

# The parity text encoder: Qwen3 with hidden 32; vocab_size is set from the tokenizer.
TINY_TEXT_ENCODER_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
    "layer_types": ["full_attention", "full_attention"],
}

SILENCE_LATENT_FRAMES = 15000  # 600 s at 25 Hz, as in the published folders
TOKENIZER_VOCAB_SIZE = 1000   # regular tokens the tiny BPE aims for (the corpus may give fewer)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Pre-tokenizer split pattern of the Qwen2/Qwen3 tokenizers (contractions, letter runs,
# single digits, punctuation runs with trailing newlines, newline runs, whitespace).
QWEN2_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                       r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = ("{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + "
                 "message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}"
                 "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# Training text for the tiny BPE: the words and markup the DiT prompts are made of.
_TOKENIZER_CORPUS = """\
# Instruction
Fill the audio semantic mask based on the given conditions:
Generate audio semantic tokens based on the given conditions:
Repaint the masked region of the audio. Continue the song. Cover the source audio.
Extract the vocals track from the audio. Complete the input track with drums and bass.
Generate the guitar track based on the audio context.
# Caption
An upbeat pop song with bright synth leads, punchy drums and a warm bass line.
A slow acoustic ballad with fingerpicked guitar, soft piano and breathy female vocals.
Dark techno groove, driving kick, rolling bassline, metallic percussion and hypnotic pads.
Lo-fi hip hop beat with dusty vinyl crackle, mellow keys and a lazy swing.
Energetic rock anthem with distorted electric guitars, big drums and a shouted chorus.
Jazz trio, upright bass, brushed snare, piano improvisation, late night club atmosphere.
Cinematic orchestral score with strings, brass swells, choir and timpani.
Funky disco track with slap bass, wah guitar, strings and four on the floor drums.
# Metas
- bpm: 120
- timesignature: 4
- keyscale: F# minor
- duration: 30 seconds
- language: en
bpm: 92 keyscale: D major timesignature: 3 duration: 184 language: unknown
C major, G major, D minor, A minor, E minor, B flat major, E flat major, Ab major, Bb minor.
# Lyric
[Intro]
[Verse]
We were running through the city lights, hearts on fire in the summer night
[Pre-Chorus]
Hold on, hold on, don't let it go
[Chorus]
Sing it loud, sing it proud, we are the music in the crowd
[Bridge]
And when the morning comes, we'll still be dancing in the sun
[Outro]
[Instrumental]
0 1 2 3 4 5 6 7 8 9 10 60 90 100 128 140 174 2024
caption: duration: keyscale: language: timesignature: bpm: <think> </think>
"""


def _log_default(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------------------------
# DiT


def dit_config(name: str) -> dict:
    """config.json for a DiT folder: the tiny architecture plus the variant's flags and auto_map."""
    turbo = "turbo" in name
    xl = "-xl-" in name
    version = "turbo" if turbo else ("sft" if "sft" in name else "base")
    config = dict(TINY_DIT_CONFIG, **(TINY_XL_CHANGES if xl else {}))
    module = ("modeling_acestep_v15_xl_" if xl else "modeling_acestep_v15_") + ("turbo" if turbo else "base")
    config["auto_map"] = {
        "AutoConfig": "configuration_acestep_v15.AceStepConfig",
        "AutoModel": module + ".AceStepConditionGenerationModel",
    }
    config["is_turbo"] = turbo
    config["model_version"] = version
    return dict(sorted(config.items()))


def _randomise(module, seed: int) -> None:
    """Seeded, scale-aware random weights, like a briefly trained network rather than an init:
    weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1), norm scales ~ 1 + N(0, 0.25), learned
    tokens/embeddings ~ N(0, 1), modulation tables ~ N(0, 0.3)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            parts = name.split(".")
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if len(parts) > 1 and "norm" in parts[-2]:
                value = 1.0 + 0.25 * noise
            elif parts[-1] == "bias":
                value = 0.1 * noise
            elif parts[-1] == "weight" and param.dim() >= 2:
                value = noise / (param[0].numel() ** 0.5)
            elif "scale_shift_table" in parts[-1]:
                value = 0.3 * noise
            else:
                value = noise
            param.copy_(value)


def write_dit(folder: Path, name: str, seed: int, silence_latent) -> Path:
    import torch
    from safetensors.torch import save_file

    from engine.models.acestep import AceStepConditionGenerationModel, AceStepConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = dit_config(name)
    model = AceStepConditionGenerationModel(AceStepConfig.from_dict(config))
    _randomise(model, seed)
    state = {key: tensor.detach().to(torch.float32).contiguous() for key, tensor in model.state_dict().items()}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if "-xl-" in name:
        save_sharded(state, folder, XL_SHARDS)
    else:
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    torch.save(silence_latent.clone(), str(folder / "silence_latent.pt"))
    return folder


def save_sharded(state: dict, folder: Path, shards: int) -> None:
    """`model-0000i-of-0000n.safetensors` files of about equal size plus `model.safetensors.index.json`,
    the layout `save_pretrained` gives the published XL weights."""
    from safetensors.torch import save_file

    sizes = {key: tensor.numel() * tensor.element_size() for key, tensor in state.items()}
    total = sum(sizes.values())
    groups: list[dict] = [{} for _ in range(shards)]
    done = 0
    for key, tensor in state.items():
        groups[min(shards - 1, done * shards // total)][key] = tensor
        done += sizes[key]
    weight_map = {}
    for number, group in enumerate(groups, 1):
        file_name = f"model-{number:05d}-of-{shards:05d}.safetensors"
        save_file(group, str(folder / file_name), metadata={"format": "pt"})
        weight_map.update({key: file_name for key in group})
    index = {"metadata": {"total_parameters": sum(t.numel() for t in state.values()), "total_size": total},
             "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def make_silence_latent(seed: int):
    """A seeded random [1, 64, 15000] float32 tensor standing in for the VAE's encoding of silence."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, 64, SILENCE_LATENT_FRAMES), generator=generator, dtype=torch.float32)


def write_tiny_lora(folder: Path, dit_name: str, seed: int, rank: int = 4, alpha: int = 8) -> Path:
    """A random PEFT LoRA for a tiny DiT in upstream's trainer format (adapter_config.json +
    adapter_model.safetensors on q/k/v/o of self- and cross-attention), to try the LoRA flow."""
    import torch
    from safetensors.torch import save_file

    config = dit_config(dit_name)
    width, heads, kv_heads, head_dim = (config["hidden_size"], config["num_attention_heads"],
                                        config["num_key_value_heads"], config["head_dim"])
    sizes = {"q_proj": (width, heads * head_dim), "k_proj": (width, kv_heads * head_dim),
             "v_proj": (width, kv_heads * head_dim), "o_proj": (heads * head_dim, width)}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for attention in ("self_attn", "cross_attn"):
            for proj, (fan_in, fan_out) in sizes.items():
                key = f"base_model.model.layers.{layer}.{attention}.{proj}"
                tensors[f"{key}.lora_A.weight"] = torch.randn((rank, fan_in), generator=generator) / fan_in ** 0.5
                tensors[f"{key}.lora_B.weight"] = 0.06 * torch.randn((fan_out, rank), generator=generator)
    folder.mkdir(parents=True, exist_ok=True)
    adapter_config = {"peft_type": "LORA", "task_type": "FEATURE_EXTRACTION", "r": rank, "lora_alpha": alpha,
                      "lora_dropout": 0.0, "bias": "none", "use_rslora": False, "use_dora": False,
                      "target_modules": sorted(sizes), "base_model_name_or_path": dit_name, "inference_mode": True}
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


# --------------------------------------------------------------------------------------------
# VAE


def write_vae(folder: Path, seed: int) -> Path:
    """Tiny AutoencoderOobleck saved with `save_pretrained` in bf16, like the published VAE."""
    import torch
    from diffusers import AutoencoderOobleck

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # diffusers builds Oobleck with the legacy weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        vae = AutoencoderOobleck(**TINY_VAE_CONFIG)
    torch.nn.Module.to(vae, torch.bfloat16).save_pretrained(str(folder), safe_serialization=True)
    return folder


# --------------------------------------------------------------------------------------------
# Text encoder


def build_tokenizer(vocab_size: int = TOKENIZER_VOCAB_SIZE):
    """A byte-level BPE `tokenizers.Tokenizer` laid out like Qwen3-Embedding's.

    NFC normaliser, Qwen2 split regex + ByteLevel pre-tokenizer, ByteLevel decoder; regular
    tokens first, then `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>`; the post-processor
    appends `<|endoftext|>` to every sequence, as the real embedding tokenizer does.
    Deterministic: the same corpus and settings always give the same vocabulary.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS.splitlines(keepends=True), trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    end_of_text = tokenizer.token_to_id(SPECIAL_TOKENS[0])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0",
        pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[(SPECIAL_TOKENS[0], end_of_text)],
    )
    return tokenizer


def _tokenizer_files(folder: Path, tokenizer) -> None:
    """tokenizer.json plus the side files AutoTokenizer and the published folder carry."""
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer.model.save(str(folder))  # vocab.json, merges.txt
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}

    def entry(token: str) -> dict:
        return {"content": token, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    tokenizer_config = {
        "added_tokens_decoder": {str(ids[token]): {**entry(token), "special": True} for token in SPECIAL_TOKENS},
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "extra_special_tokens": {},
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    files = {
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": {"eos_token": entry("<|im_end|>"), "pad_token": entry("<|endoftext|>")},
        "added_tokens.json": dict(sorted(ids.items())),
    }
    for file_name, content in files.items():
        (folder / file_name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")


def write_text_encoder(folder: Path, seed: int) -> Path:
    """Tiny Qwen3Model saved like Qwen3-Embedding-0.6B (keys without a `model.` prefix)."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    end_of_text = tokenizer.token_to_id("<|endoftext|>")
    config = Qwen3Config(vocab_size=tokenizer.get_vocab_size(), bos_token_id=end_of_text,
                         eos_token_id=end_of_text, **TINY_TEXT_ENCODER_CONFIG)
    torch.manual_seed(seed)
    model = Qwen3Model(config)
    _randomise(model, seed)
    model.save_pretrained(str(folder), safe_serialization=True)
    _tokenizer_files(folder, tokenizer)
    return folder


# --------------------------------------------------------------------------------------------
# The whole layout


def make_tiny_checkpoints(root, seed: int = 0, with_lm: bool = False, dits: Iterable[str] = DIT_MODELS,
                          log: Callable[[str], None] = _log_default) -> list[Path]:
    """Write the tiny checkpoint layout under `root`; returns the folders written.

    `dits` limits which DiT folders are written (default: every name in DIT_MODELS). Each
    component gets its own seed derived from `seed`, so the same seed gives the same files.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    silence = make_silence_latent(seed)
    for index, name in enumerate(DIT_MODELS):
        if name in dits:
            written.append(write_dit(root / name, name, seed * 1000 + 10 + index, silence))
            log(f"wrote {root / name} (DiT, is_turbo={dit_config(name)['is_turbo']})")
    if TINY_LORA_DIT in dits:
        written.append(write_tiny_lora(root / "loras" / TINY_LORA, TINY_LORA_DIT, seed * 1000 + 3))
        log(f"wrote {root / 'loras' / TINY_LORA} (LoRA for {TINY_LORA_DIT}, PEFT format)")
    written.append(write_vae(root / VAE_DIR, seed * 1000 + 1))
    log(f"wrote {root / VAE_DIR} (AutoencoderOobleck, hop 1920, 64 latent channels)")
    written.append(write_text_encoder(root / TEXT_ENCODER_DIR, seed * 1000 + 2))
    log(f"wrote {root / TEXT_ENCODER_DIR} (Qwen3Model + byte-level BPE tokenizer)")
    if with_lm:
        written.extend(_write_lms(root, seed, log))
    for folder in written:
        write_tiny_marker(folder, seed)
    return written


def write_tiny_marker(folder: Path, seed: int) -> None:
    """Mark a folder as random weights, so `download`, the engine and the window can say so."""
    note = {"tiny": True, "seed": seed, "warning": TINY_WARNING,
            "replace_with": "ace-companion download (replaces these folders with the published weights)"}
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / TINY_MARKER).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")


def _write_lms(root: Path, seed: int, log: Callable[[str], None]) -> list[Path]:
    try:
        from engine.lm.tiny import make_tiny_lm
    except ImportError as exc:
        log(f"note: LM folders skipped: engine.lm.tiny is not available ({exc})")
        return []
    written = []
    for index, name in enumerate(LM_MODELS):
        folder = root / name
        make_tiny_lm(folder, seed * 1000 + 100 + index)
        written.append(folder)
        log(f"wrote {folder} (5 Hz LM)")
    return written


def add_arguments(parser) -> None:
    parser.description = ("Write tiny random checkpoints in the full published layout under DIR (every "
                          "DiT variant, vae, Qwen3-Embedding-0.6B; with --with-lm the 5 Hz LM folders). "
                          "For tests and trying the app without the 6 GB download; the audio is noise.")
    parser.add_argument("dir", metavar="DIR", help="folder to write (created if needed; files are overwritten)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for all weights (default 0)")
    parser.add_argument("--with-lm", action="store_true", help="also write tiny 5 Hz LM folders")


def run(args) -> int:
    if args.seed < 0:
        print("make-tiny-checkpoints: --seed must be >= 0", file=sys.stderr)
        return 2
    root = Path(args.dir).expanduser()
    if root.exists() and not root.is_dir():
        print(f"make-tiny-checkpoints: {root} exists and is not a folder", file=sys.stderr)
        return 2
    try:
        make_tiny_checkpoints(root, seed=args.seed, with_lm=args.with_lm)
    except OSError as exc:
        print(f"make-tiny-checkpoints: cannot write to {root} ({exc.strerror or exc})", file=sys.stderr)
        return 1
    print(f"tiny checkpoints ready ({TINY_WARNING}): use --checkpoints {root.resolve()} or "
          f"ACE_COMPANION_CHECKPOINTS={root.resolve()}; `ace-companion download` replaces them with "
          f"the real weights")
    return 0
