"""DiT prompt strings against the `derived` values of every parity case."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from engine.prompts import caption_prompt, metas_string, request_prompts, task_instruction
from tests.parity_utils import CASES_DIR, case_request

CASE_FILES = sorted(CASES_DIR.glob("*.json"))


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_prompts_match_upstream(path):
    case = json.loads(path.read_text(encoding="utf-8"))
    request = case_request(path)
    derived = case["derived"]
    if request.src_audio:  # source tasks report the unpadded source length
        info = sf.info(request.src_audio)
        duration = info.frames / info.samplerate
    else:
        duration = request.duration
    text, lyrics = request_prompts(request, duration)
    assert task_instruction(request.task_type, request.track_name, request.track_classes) == derived["instruction"]
    assert text == derived["text_prompt"]
    assert lyrics == derived["lyrics_prompt"]
    if "non_cover_text_prompt" in derived:
        non_cover, _ = request_prompts(request, duration, instruction=task_instruction("text2music"))
        assert non_cover == derived["non_cover_text_prompt"]


def test_instructions_for_every_task():
    assert task_instruction("extract", "backing_vocals") == "Extract the BACKING_VOCALS track from the audio:"
    assert task_instruction("extract") == "Extract the track from the audio:"
    assert task_instruction("lego", "guitar") == "Generate the GUITAR track based on the audio context:"
    assert task_instruction("lego") == "Generate the track based on the audio context:"
    assert task_instruction("complete", track_classes=["drums", "bass"]) == \
        "Complete the input track with DRUMS | BASS:"
    assert task_instruction("complete") == "Complete the input track:"
    assert task_instruction("text2music", has_audio_codes=True) == task_instruction("cover")
    with pytest.raises(ValueError):
        task_instruction("karaoke")


def test_metas_defaults_and_normalisation():
    assert metas_string(None, "", "", None) == (
        "- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 30 seconds\n")
    assert metas_string(120, "3/4", " A minor ", 12.9) == (
        "- bpm: 120\n- timesignature: 3\n- keyscale: A minor\n- duration: 12 seconds\n")
    assert caption_prompt("Do this", "c", "m").startswith("# Instruction\nDo this:\n\n# Caption\nc")
