"""Model and sampler mechanics against the source-task parity cases, fed their stored inputs.

The audio front end of these tasks (VAE encode, masks, reference montage) belongs to the task
layer; here the stored upstream inputs go straight into our condition encoder, FSQ
tokenizer/detokenizer, context builder and sampler (ADG, repaint injection + boundary blend,
cover-strength switch), and every downstream tensor must match.
"""

from __future__ import annotations

import pytest
import torch

from engine.models.acestep import AceStepConditionGenerationModel
from engine.pipeline import _Denoiser, sampler_settings_for, sampler_steps
from engine.regions import repaint_schedule
from engine.samplers import RepaintSettings, sample
from tests.parity_utils import CHECKPOINTS, LATENT_TOLERANCE, case_request, load_case, relative_error

SOURCE_CASES = [
    "repaint_turbo_middle",
    "repaint_turbo_outpaint_end",
    "cover_turbo_strength1",
    "cover_turbo_strength05_reference",
    "lego_base_guitar",
    "extract_base_vocals",
    "complete_base_drums_bass_adg",
]
_MODELS: dict[str, AceStepConditionGenerationModel] = {}


def _model(name: str) -> AceStepConditionGenerationModel:
    if name not in _MODELS:
        _MODELS[name] = AceStepConditionGenerationModel.from_folder(CHECKPOINTS / name)
    return _MODELS[name]


def _close(actual, expected, key):
    err = relative_error(actual, expected)
    assert err < LATENT_TOLERANCE, f"{key}: max|err|/RMS = {err:.3e}"


@pytest.mark.parametrize("name", SOURCE_CASES)
def test_stored_inputs_reproduce_sampler_outputs(name):
    case, exp, path = load_case(name)
    request = case_request(path)
    model = _model(case["dit"])
    refer = exp.get("refer_audio_latents", model.silence_latent[:, :750])
    order = exp["refer_audio_order_mask"]

    def encode(text_key):
        return model.encode_conditions(exp[f"{text_key}_hidden_states"], exp[f"{text_key}_attention_mask"],
                                       exp["lyric_hidden_states"], exp["lyric_attention_mask"], refer, order)

    enc, enc_mask = encode("text")
    _close(enc, exp["encoder_hidden_states"], "encoder_hidden_states")
    assert torch.equal(enc_mask, exp["encoder_attention_mask"])
    context = model.context_latents(exp["src_latents"], exp["chunk_masks"], exp["is_covers"])
    _close(context, exp["context_latents"], "context_latents")
    if "audio_codes" in exp:
        quantized, codes = model.tokenize(exp["src_latents"])
        assert torch.equal(codes.to(exp["audio_codes"].dtype), exp["audio_codes"])
        _close(quantized, exp["lm_hints_5hz"], "lm_hints_5hz")

    settings = sampler_settings_for(request, bool(model.config.is_turbo))
    phases = [(enc, context)]
    if "encoder_hidden_states_non_cover" in exp:
        nc_enc, _ = encode("non_cover_text")
        _close(nc_enc, exp["encoder_hidden_states_non_cover"], "encoder_hidden_states_non_cover")
        silence = model.silence_latent[:, :context.shape[1]]
        nc_context = model.context_latents(silence, exp["chunk_masks"], torch.zeros_like(exp["is_covers"]))
        _close(nc_context, exp["context_latents_non_cover"], "context_latents_non_cover")
        phases.append((nc_enc, nc_context))
        settings.switch_step = int(sampler_steps(settings) * request.audio_cover_strength)
    if "repaint_mask" in exp:
        ratio, crossfade, _ = repaint_schedule(request.repaint_mode, request.repaint_strength)
        settings.repaint = RepaintSettings(exp["repaint_mask"], exp["target_latents"], ratio, crossfade)

    trace = {}
    settings.trace = trace
    latents = sample(_Denoiser(model, phases, settings.guidance_scale > 1.0), exp["noise"], settings)
    assert torch.equal(trace["sampler_t"], exp["sampler_t"])
    _close(trace["dit_velocity_step0"], exp["dit_velocity_step0"], "dit_velocity_step0")
    _close(trace["sampler_xt"], exp["sampler_xt"], "sampler_xt")
    _close(latents, exp["pred_latents"], "pred_latents")


def test_repaint_schedule_modes():
    assert repaint_schedule("balanced", 0.5) == (0.5, 12, 0.025)
    assert repaint_schedule("conservative", 0.1) == (1.0, 25, 0.05)
    assert repaint_schedule("aggressive", 0.9) == (0.0, 0, 0.0)
    with pytest.raises(ValueError):
        repaint_schedule("wild", 0.5)
