"""LoRA and XL in the clients: the window's DiT menu, LoRA picker and scale slider, and the bridge's
request defaults / OSC settings (both torch-free)."""

from __future__ import annotations

import argparse

from bridge.cli import add_arguments, config_from_args
from bridge.commands import parse_settings
from engine.request import GenerationRequest
from gui.request_builder import HostValues, build_request
from tests.gui_helpers import qt_app


def _panel():
    from gui.panels.prompt_panel import PromptPanel

    qt_app()
    return PromptPanel()


def test_window_offers_xl_dits_and_a_lora_picker():
    panel = _panel()
    dits = [panel.dit_combo.itemText(i) for i in range(panel.dit_combo.count())]
    assert {"acestep-v15-xl-turbo", "acestep-v15-xl-sft", "acestep-v15-xl-base"} <= set(dits)

    values = panel.values()  # engine default: no LoRA fields in the request
    assert (values.lora, values.lora_scale) == (None, None)
    request = build_request("generate", values, HostValues())
    assert request.lora is None and request.lora_scale is None
    assert not panel.lora.slider.isEnabled()

    panel.set_available_loras(["my-voice", "tape-drums"])
    panel.lora.combo.setCurrentText("tape-drums")
    panel.lora.slider.setValue(35)
    assert panel.lora.slider.isEnabled() and panel.lora.scale_label.text() == "0.35"
    request = build_request("generate", panel.values(), HostValues())
    assert request.lora == "tape-drums" and request.lora_scale == 0.35

    panel.lora.combo.setCurrentText("none")
    assert build_request("generate", panel.values(), HostValues()).lora == ""

    panel.lora.combo.setCurrentText("tape-drums")
    panel.set_available_loras(["my-voice"])  # the chosen one vanished: back to the engine default
    assert panel.lora.choice() == (None, None)
    panel.recall({"caption": "x", "lora": "my-voice", "lora_scale": 0.5}, seed=None)
    assert panel.lora.choice() == ("my-voice", 0.5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_bridge_passes_lora_through_defaults_and_osc_settings():
    args = build_parser().parse_args(["--lora", "my-voice", "--lora-scale", "0.6"])
    assert config_from_args(args).request_defaults == {"lora": "my-voice", "lora_scale": 0.6}
    args = build_parser().parse_args(["--request", '{"lora": "a", "caption": "x"}', "--lora-scale", "0.2"])
    assert config_from_args(args).request_defaults == {"lora": "a", "caption": "x", "lora_scale": 0.2}
    settings = parse_settings(("lora", "tape-drums", "lora_scale", 0.4))
    assert settings == {"lora": "tape-drums", "lora_scale": 0.4}
    assert {"lora", "lora_scale"} <= set(GenerationRequest.field_names())  # accepted as request fields
