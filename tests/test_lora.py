"""LoRA adapters on the DiT: reading upstream's PEFT format, switching without reloading the DiT."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.lora import LoraError, read_adapter
from engine.request import GenerationRequest, RequestError
from tests.parity_utils import case_request_fields, compare_dump, relative_error
from tests.test_parity_xl import XL_CASES, XL_CHECKPOINTS, load_xl_case

ADAPTER = XL_CHECKPOINTS / "loras" / "tiny-xl-turbo-lora"


@pytest.fixture(scope="module")
def pipeline():
    from engine.pipeline import Pipeline

    return Pipeline.from_checkpoints(XL_CHECKPOINTS, dit="acestep-v15-xl-turbo", device="cpu")


def _request(name: str, **changes) -> GenerationRequest:
    data = case_request_fields(XL_CASES / f"{name}.json")
    data.update(changes)
    return GenerationRequest.from_dict(data)


def _latents(pipeline, request) -> torch.Tensor:
    return pipeline.generate(request, dump=True).dump["pred_latents"]


def _copy_adapter(tmp_path, name: str, b_factor: float):
    folder = tmp_path / name
    shutil.copytree(ADAPTER, folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    weights = {k: (v * b_factor if ".lora_B." in k else v) for k, v in weights.items()}
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return folder


def test_reads_upstream_adapter_format():
    adapter = read_adapter(ADAPTER)
    assert adapter.name == "tiny-xl-turbo-lora" and adapter.rank == 4 and adapter.alpha == 8
    assert len(adapter.weights) == 16  # q/k/v/o of self- and cross-attention, 2 layers
    a, b = adapter.weights["layers.0.self_attn.q_proj"]
    assert tuple(a.shape) == (4, 80) and tuple(b.shape) == (96, 4)


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "adapter_config.json").unlink(), "no adapter_config.json"),
    (lambda f: (f / "adapter_model.safetensors").write_bytes(b"12345678"), "adapter_model.safetensors"),
    (lambda f: _edit_config(f, use_dora=True), "DoRA"),
    (lambda f: _edit_config(f, peft_type="LOHA"), "peft_type"),
    (lambda f: _edit_config(f, r=0), "'r' must be a positive integer"),
])
def test_broken_adapters_are_one_line_errors(tmp_path, change, message):
    folder = tmp_path / "broken"
    shutil.copytree(ADAPTER, folder)
    change(folder)
    with pytest.raises(LoraError, match=message) as info:
        read_adapter(folder)
    assert "\n" not in str(info.value)


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_request_fields_are_checked():
    assert GenerationRequest.from_dict({"lora": " mine ", "lora_scale": 0.25}).lora == "mine"
    for bad, field in (({"lora": "../x"}, "lora"), ({"lora": 3}, "lora"), ({"lora_scale": 1.5}, "lora_scale")):
        with pytest.raises(RequestError) as info:
            GenerationRequest.from_dict(bad)
        assert info.value.field == field


def test_switching_adapters_and_scales_never_reloads_the_dit(pipeline, tmp_path):
    dit = pipeline.dit
    q_proj = dit.decoder.layers[0].self_attn.q_proj
    base_weight = q_proj.weight.detach().clone()
    _, baseline, _ = load_xl_case("t2m_xl_turbo_lyrics_metas")
    _, scale1, _ = load_xl_case("lora_xl_turbo_scale1")
    _, scale05, _ = load_xl_case("lora_xl_turbo_scale05")

    out = pipeline.generate(_request("lora_xl_turbo_scale05"), dump=True)
    assert compare_dump(out.dump, scale05) == []
    assert out.models["lora"] == "tiny-xl-turbo-lora" and out.models["lora_scale"] == 0.5
    assert relative_error(_latents(pipeline, _request("lora_xl_turbo_scale1")), scale1["pred_latents"]) < 1e-4
    # a second adapter whose B is doubled: at scale 0.5 it equals the first at scale 1.0
    pipeline.loras.load(str(_copy_adapter(tmp_path, "doubled", 2.0)))
    doubled = _latents(pipeline, _request("lora_xl_turbo_scale1", lora="doubled", lora_scale=0.5))
    assert relative_error(doubled, scale1["pred_latents"]) < 1e-4
    # no field and no default -> no adapter; "" -> no adapter even with a default set
    assert relative_error(_latents(pipeline, _request("t2m_xl_turbo_lyrics_metas")), baseline["pred_latents"]) < 1e-4
    pipeline.loras.set_default("doubled", 0.25)
    assert relative_error(_latents(pipeline, _request("t2m_xl_turbo_lyrics_metas")), scale05["pred_latents"]) < 1e-4
    assert relative_error(_latents(pipeline, _request("t2m_xl_turbo_lyrics_metas", lora="")),
                          baseline["pred_latents"]) < 1e-4

    assert pipeline.dit is dit
    assert torch.equal(dit.decoder.layers[0].self_attn.q_proj.get_base_layer().weight, base_weight)
    # unloading every adapter puts the plain linear layers back on the next job
    pipeline.loras.unload()
    assert relative_error(_latents(pipeline, _request("t2m_xl_turbo_lyrics_metas")), baseline["pred_latents"]) < 1e-4
    assert type(dit.decoder.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert dit.decoder.lora_active is None


def test_unknown_or_mismatched_adapter_fails_the_job_clearly(pipeline, tmp_path):
    with pytest.raises(LoraError, match="no adapter 'nope'.*tiny-xl-turbo-lora"):
        pipeline.generate(_request("t2m_xl_turbo_lyrics_metas", lora="nope"))
    # an adapter trained for other shapes (here: every A widened) is refused before touching the DiT
    folder = tmp_path / "wide"
    shutil.copytree(ADAPTER, folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file({k: (torch.cat([v, v], 1) if ".lora_A." in k else v) for k, v in weights.items()},
              str(folder / "adapter_model.safetensors"))
    with pytest.raises(LoraError, match="does not fit the loaded DiT"):
        pipeline.loras.load(str(folder), decoder=pipeline.dit.decoder)
    # as the engine's default (no `lora` field), an adapter that does not fit is skipped, not fatal
    pipeline.loras.load(str(folder))
    pipeline.loras.set_default("wide")
    out = pipeline.generate(_request("t2m_xl_turbo_lyrics_metas"), dump=True)
    assert out.models["lora"] == ""
    assert relative_error(out.dump["pred_latents"], load_xl_case("t2m_xl_turbo_lyrics_metas")[1]["pred_latents"]) < 1e-4
    with pytest.raises(LoraError, match="does not fit"):
        pipeline.generate(_request("t2m_xl_turbo_lyrics_metas", lora="wide"))
    pipeline.loras.unload("wide")


def test_diffusers_format_adapter_gives_the_same_result(pipeline, tmp_path):
    """The same adapter saved the diffusers way (transformer.*.to_q ..., alpha in the metadata)."""
    folder = tmp_path / "as-diffusers"
    folder.mkdir()
    weights = load_file(str(ADAPTER / "adapter_model.safetensors"))
    renamed = {}
    for key, tensor in weights.items():
        key = key.replace("base_model.model.", "transformer.")
        for ours, theirs in (("q_proj", "to_q"), ("k_proj", "to_k"), ("v_proj", "to_v"), ("o_proj", "to_out.0")):
            key = key.replace(f".{ours}.", f".{theirs}.")
        renamed[key] = tensor
    save_file(renamed, str(folder / "pytorch_lora_weights.safetensors"),
              metadata={"lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 8})})
    adapter = pipeline.loras.load(str(folder))
    assert adapter.rank == 4 and adapter.alpha == 8 and len(adapter.weights) == 16
    _, scale1, _ = load_xl_case("lora_xl_turbo_scale1")
    latents = _latents(pipeline, _request("lora_xl_turbo_scale1", lora="as-diffusers"))
    assert relative_error(latents, scale1["pred_latents"]) < 1e-4
    pipeline.loras.unload("as-diffusers")


def test_tiny_checkpoints_carry_a_usable_lora(tmp_path):
    """make-tiny-checkpoints writes a LoRA for the tiny XL turbo DiT that a job can use."""
    from engine.commands.tiny import TINY_LORA, make_tiny_checkpoints
    from engine.lora import list_adapters
    from engine.pipeline import Pipeline

    make_tiny_checkpoints(tmp_path, seed=0, dits=["acestep-v15-xl-turbo"], log=lambda message: None)
    assert list_adapters(tmp_path) == [TINY_LORA]
    pipeline = Pipeline.from_checkpoints(tmp_path, dit="acestep-v15-xl-turbo", device="cpu")
    request = GenerationRequest(caption="x", duration=5.0, seed=1, inference_steps=2)
    plain = pipeline.generate(request, dump=True).dump["pred_latents"]
    request.lora = TINY_LORA
    out = pipeline.generate(request, dump=True)
    assert out.models["lora"] == TINY_LORA and relative_error(out.dump["pred_latents"], plain) > 1e-3


def test_reloading_an_adapter_uses_its_new_weights(pipeline, tmp_path):
    folder = _copy_adapter(tmp_path, "mine", 1.0)
    _, scale1, _ = load_xl_case("lora_xl_turbo_scale1")
    pipeline.loras.load(str(folder))
    assert relative_error(_latents(pipeline, _request("lora_xl_turbo_scale1", lora="mine")),
                          scale1["pred_latents"]) < 1e-4
    _copy_adapter(tmp_path / "again", "mine", 0.5)  # B halved: scale 1 now gives the scale-0.5 case
    pipeline.loras.load(str(tmp_path / "again" / "mine"))
    _, scale05, _ = load_xl_case("lora_xl_turbo_scale05")
    assert relative_error(_latents(pipeline, _request("lora_xl_turbo_scale1", lora="mine")),
                          scale05["pred_latents"]) < 1e-4
    pipeline.loras.unload("mine")
