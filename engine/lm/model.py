"""Loading a published 5 Hz LM folder and rendering its prompts.

The folder is used as published: `config.json` (stock Qwen3), `model.safetensors` (tied
embeddings, no `lm_head`), `tokenizer.json` and the chat template (`chat_template.jinja` or
`tokenizer_config.json`'s `chat_template`). Prompts are rendered with that template through the
tokenizer's `apply_chat_template`; we ship no copy of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.checkpoints import validate_folder
from engine.devices import resolve_device, resolve_dtype
from engine.lm import constants as C
from engine.lm.tables import FSMTables
from engine.types import CheckpointError


def default_device(device: str | None) -> str:
    return str(resolve_device(device))


def default_dtype(device: str, dtype: torch.dtype | str | None) -> torch.dtype:
    return resolve_dtype(torch.device(device), dtype)


def system_message(instruction: str) -> dict:
    return {"role": "system", "content": f"# Instruction\n{instruction}\n\n"}


class LanguageModel:
    """A loaded 5 Hz LM: Qwen3 causal LM + fast tokenizer + FSM tables."""

    def __init__(self, folder: str | Path, device: str | None = None, dtype=None,
                 duration_max: int = C.DEFAULT_DURATION_MAX):
        folder = validate_folder(Path(folder), "lm")
        self.folder = folder
        self.name = folder.name
        self.device = default_device(device)
        self.dtype = default_dtype(self.device, dtype)
        self.tokenizer = _load_tokenizer(folder)
        self.model = _load_model(folder, self.device, self.dtype, len(self.tokenizer))
        self.tables = FSMTables(self.tokenizer, duration_max=duration_max,
                                vocab_size=int(self.model.config.vocab_size))
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.eos_token_id = self.tokenizer.eos_token_id

    # ----------------------------------------------------------------- prompts
    def chat(self, instruction: str, user: str) -> str:
        """`[system, user]` rendered by the folder's chat template with the assistant turn opened."""
        return self.tokenizer.apply_chat_template(
            [system_message(instruction), {"role": "user", "content": user}],
            tokenize=False, add_generation_prompt=True)

    def tokenize(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(text, return_tensors="pt", padding=False, truncation=True)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def tokenize_pair(self, cond: str, uncond: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Both CFG prompts as one left-padded batch (pad = the tokenizer's pad token)."""
        saved = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            enc = self.tokenizer([cond, uncond], return_tensors="pt", padding=True, truncation=True)
        finally:
            self.tokenizer.padding_side = saved
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def info(self) -> dict:
        cfg = self.model.config
        return {"name": self.name, "folder": str(self.folder), "device": self.device,
                "dtype": str(self.dtype).replace("torch.", ""), "layers": cfg.num_hidden_layers,
                "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size}


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except Exception as exc:  # noqa: BLE001 - turn any loader failure into one line
        raise CheckpointError(f"{folder / 'tokenizer.json'}: cannot load the tokenizer "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointError(f"{folder}: no chat template (chat_template.jinja or tokenizer_config.json "
                              f"'chat_template'); re-run `ace-companion download` for this model")
    if tokenizer.eos_token_id is None:
        raise CheckpointError(f"{folder / 'tokenizer_config.json'}: no eos_token; the LM needs <|im_end|>")
    return tokenizer


def _load_model(folder: Path, device: str, dtype: torch.dtype, tokenizer_size: int):
    from transformers import AutoConfig, Qwen3ForCausalLM

    config_path = folder / "config.json"
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: unreadable config ({exc})") from None
    if raw.get("model_type") != "qwen3":
        raise CheckpointError(f"{config_path}: model_type is {raw.get('model_type')!r}, expected 'qwen3' "
                              f"(is this an LM folder?)")
    if int(raw.get("vocab_size", -1)) < tokenizer_size:
        raise CheckpointError(f"{config_path}: vocab_size {raw.get('vocab_size')} is smaller than the tokenizer "
                              f"({tokenizer_size} tokens); config.json and tokenizer.json do not match")
    try:
        config = AutoConfig.from_pretrained(str(folder))
        model, info = Qwen3ForCausalLM.from_pretrained(
            str(folder), config=config, dtype=dtype, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{folder / 'model.safetensors'}: cannot load the weights ({first}); "
                              f"delete the folder and re-run `ace-companion download`") from None
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = list(info.get(kind) or [])
        if keys:
            raise CheckpointError(f"{folder / 'model.safetensors'}: {kind.replace('_', ' ')}: {keys[0]} "
                                  f"({len(keys)} in all); the weights do not match config.json")
    model.to(device=device, dtype=dtype)
    model.eval()
    return model
