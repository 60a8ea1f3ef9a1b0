"""The DiT's caption and lyric prompt strings (spec §5.3), for every task.

These must match upstream character for character: the token ids are part of parity.
"""

from __future__ import annotations

from engine.request import GenerationRequest, normalize_timesignature

TEXT2MUSIC_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
REPAINT_INSTRUCTION = "Repaint the mask area based on the given conditions:"
COVER_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
END_OF_TEXT = "<|endoftext|>"
NO_DURATION_METAS = "30 seconds"  # upstream's metas when no duration is known


def task_instruction(task_type: str, track_name: str | None = None,
                     track_classes: list[str] | None = None, has_audio_codes: bool = False) -> str:
    """The `# Instruction` line for a task. Audio codes turn text2music into cover."""
    if task_type == "text2music":
        return COVER_INSTRUCTION if has_audio_codes else TEXT2MUSIC_INSTRUCTION
    if task_type == "repaint":
        return REPAINT_INSTRUCTION
    if task_type in ("cover", "cover-nofsq"):
        return COVER_INSTRUCTION
    if task_type == "extract":
        if track_name:
            return f"Extract the {track_name.upper()} track from the audio:"
        return "Extract the track from the audio:"
    if task_type == "lego":
        if track_name:
            return f"Generate the {track_name.upper()} track based on the audio context:"
        return "Generate the track based on the audio context:"
    if task_type == "complete":
        if track_classes:
            names = " | ".join(name.upper() for name in track_classes)
            return f"Complete the input track with {names}:"
        return "Complete the input track:"
    raise ValueError(f"unknown task_type {task_type!r}")


def metas_string(bpm: int | None, timesignature: str, keyscale: str, duration_s: float | None) -> str:
    """`- bpm: ...` block; missing values are `N/A`, the duration is whole seconds."""
    bpm_text = str(int(bpm)) if bpm else "N/A"
    ts = normalize_timesignature(timesignature) if timesignature and timesignature.strip() else ""
    ts_text = ts if ts and ts != "N/A" else "N/A"
    ks_text = keyscale.strip() if keyscale and keyscale.strip() else "N/A"
    dur_text = f"{int(duration_s)} seconds" if duration_s is not None and duration_s > 0 else NO_DURATION_METAS
    return (f"- bpm: {bpm_text}\n- timesignature: {ts_text}\n- keyscale: {ks_text}\n"
            f"- duration: {dur_text}\n")


def caption_prompt(instruction: str, caption: str, metas: str) -> str:
    if not instruction.endswith(":"):
        instruction += ":"
    return f"# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n# Metas\n{metas}{END_OF_TEXT}\n"


def lyrics_prompt(vocal_language: str, lyrics: str) -> str:
    return f"# Languages\n{vocal_language}\n\n# Lyric\n{lyrics}{END_OF_TEXT}"


def request_prompts(request: GenerationRequest, duration_s: float | None,
                    instruction: str | None = None) -> tuple[str, str]:
    """(caption prompt, lyrics prompt) for a request; `duration_s` is what the metas report."""
    if instruction is None:
        instruction = task_instruction(request.task_type, request.track_name, request.track_classes,
                                       has_audio_codes=bool(request.audio_codes))
    metas = metas_string(request.bpm, request.timesignature, request.keyscale, duration_s)
    return (caption_prompt(instruction, request.caption, metas),
            lyrics_prompt(request.vocal_language, request.lyrics))
