"""The chain-of-thought text: parsing the LM's output and re-serialising metadata for phase 2."""

from __future__ import annotations

import re
from typing import Any

import yaml

from engine.lm import constants as C

_CODE_RE = re.compile(r"<\|audio_code_(\d+)\|>")
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def join_caption_lines(caption: str) -> str:
    """YAML continuation lines -> one line (stripped lines joined by single spaces)."""
    return " ".join(line.strip() for line in caption.split("\n") if line.strip())


def parse_codes(text: str) -> tuple[str, list[int]]:
    """All `<|audio_code_N|>` tokens of `text`: the joined string and the values."""
    values = [int(m) for m in _CODE_RE.findall(text)]
    return "".join(f"<|audio_code_{v}|>" for v in values), values


def parse_output(text: str) -> tuple[dict[str, Any], str]:
    """Metadata and audio-code string from an LM output (upstream `parse_lm_output` rules).

    The CoT is the text inside <think>...</think>, or - when phase 1 stopped before the closing
    tag - everything before the first code. Lines starting with '<' are skipped; a line without
    leading whitespace that contains ':' starts a field; indented lines continue it.
    """
    codes, _ = parse_codes(text)
    match = _THINK_RE.search(text)
    reasoning = match.group(1).strip() if match else ""
    if not reasoning:
        reasoning = text.split("<|audio_code_")[0].strip()
    metadata: dict[str, Any] = {}
    key: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if key and lines:
            _store(metadata, key, "\n".join(lines))

    for line in reasoning.split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            flush()
            name, value = line.split(":", 1)
            key, lines = name.strip().lower(), []
            if value.strip():
                lines.append(value)
        elif line.startswith((" ", "\t")) and key:
            lines.append(line)
    flush()
    return metadata, codes


def _store(metadata: dict[str, Any], key: str, value: str) -> None:
    if key in ("bpm", "duration"):
        try:
            metadata[key] = int(value.strip())
        except ValueError:
            metadata[key] = value.strip()
    elif key == "caption":
        metadata[key] = join_caption_lines(value)
    elif key in ("genres", "keyscale", "language", "timesignature"):
        metadata[key] = value.strip()


def format_cot(metadata: dict[str, Any]) -> str:
    """`<think>\\n{yaml}\\n</think>` as phase 2 sees it (sorted keys, N/4 -> N, digit strings -> int)."""
    items: dict[str, Any] = {}
    for key in C.COT_KEYS:
        value = metadata.get(key)
        if value is None:
            continue
        if key == "timesignature" and isinstance(value, str) and value.endswith("/4"):
            value = value.split("/")[0]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        items[key] = value
    body = yaml.dump(items, allow_unicode=True, sort_keys=True).strip() if items else ""
    return f"<think>\n{body}\n</think>"


def extract_after_think(text: str) -> str:
    """Free text after </think> (lyrics in understand / simple / format mode), headers removed."""
    match = re.search(r"</think>", text)
    if not match:
        return ""
    after = text[match.end():].strip()
    after = re.sub(r"^#\s*Lyrics?\s*\n", "", after, flags=re.IGNORECASE)
    after = re.sub(r"<\|im_end\|>\s*$", "", after)
    after = re.sub(r"<\|endoftext\|>\s*$", "", after)
    return after.strip()
