"""Fixed facts about the ACE-Step 1.5 5 Hz LM (prompt texts, value ranges, vocabulary rules)."""

from __future__ import annotations

# System instructions (upstream constants; each is wrapped as "# Instruction\n{text}\n\n").
GENERATE_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
UNDERSTAND_INSTRUCTION = "Understand the given musical conditions and describe the audio semantics accordingly:"
INSPIRE_INSTRUCTION = "Expand the user's input into a more detailed and specific musical description:"
FORMAT_INSTRUCTION = "Format the user's input into a more detailed and specific musical description:"

DEFAULT_NEGATIVE_PROMPT = "NO USER INPUT"

# Languages the FSM accepts for `language:` (upstream order).
VALID_LANGUAGES = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en",
    "es", "fa", "fi", "fr", "he", "hi", "hr", "ht", "hu", "id",
    "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no",
    "pa", "pl", "pt", "ro", "ru", "sa", "sk", "sr", "sv", "sw",
    "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh",
    "unknown",
)
KEY_NOTES = ("A", "B", "C", "D", "E", "F", "G")
KEY_ACCIDENTALS = ("", "#", "b", "♯", "♭")
KEY_MODES = ("major", "minor")
VALID_KEYSCALES = tuple(f"{n}{a} {m}" for n in KEY_NOTES for a in KEY_ACCIDENTALS for m in KEY_MODES)
BPM_MIN, BPM_MAX = 30, 300
DURATION_MIN = 10
DURATION_MAX = 600          # absolute cap; the usable maximum is a parameter (duration_max)
DEFAULT_DURATION_MAX = 240  # upstream's value on CPU (GPU tier 1); 480/600 on larger GPUs
VALID_TIME_SIGNATURES = ("2", "3", "4", "6")

MAX_AUDIO_CODE = 63999      # codes 0..63999 are valid; higher code tokens exist but are never allowed
CODES_PER_SECOND = 5
CAPTION_MAX_TOKENS = 512
COT_MAX_NEW_TOKENS = 3500   # min(4096 fallback, DURATION_MAX * 5 + 500)
MAX_MODEL_LEN = 4096

# Field order of the chain of thought; genres is skipped on every path we run.
FIELD_ORDER = ("bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature")
COT_KEYS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
