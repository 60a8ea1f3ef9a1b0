import argparse

import pytest

from bridge import cli


def parse(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_local_and_sane():
    config = cli.config_from_args(parse())
    assert config.osc_host == "127.0.0.1" and config.osc_port == 9110
    assert config.reaper_listen_port == 9000 and config.ableton_port == 11000 and config.ableton_listen_port == 11001
    assert config.insert_mode == "replace" and config.stems == ("drums", "bass", "vocals")
    assert config.engine_url.startswith("http://127.0.0.1")


def test_options_reach_the_config(tmp_path):
    source = tmp_path / "mix.wav"
    source.write_bytes(b"x")
    config = cli.config_from_args(parse("--host", "ableton", "--source-file", str(source), "--sample-rate", "48000",
                                        "--request", '{"caption": "lofi", "inference_steps": 4}',
                                        "--stems", "bass, drums", "--midi-map", "note:60=repaint",
                                        "--render-source", "track", "--output", str(tmp_path / "out"),
                                        "--reaper-wake-action", "_RS1a2b", "--no-source-cache"))
    assert config.host == "ableton" and config.source_file == str(source) and config.sample_rate == 48000
    assert config.request_defaults == {"caption": "lofi", "inference_steps": 4}
    assert config.stems == ("bass", "drums") and config.midi_mappings == ["note:60=repaint"]
    assert config.render_source == "track" and config.output_dir == str(tmp_path / "out")
    assert config.reaper_wake_action == "_RS1a2b" and config.source_cache is False
    assert cli.config_from_args(parse()).source_cache is True


@pytest.mark.parametrize("argv,fragment", [
    (("--request", "{bad"), "not valid JSON"),
    (("--request", "[1]"), "JSON object"),
    (("--source-file", "/no/such.wav"), "does not exist"),
    (("--sample-rate", "100"), "sample rate"),
    (("--osc-port", "70000"), "UDP port"),
])
def test_bad_options_are_named(argv, fragment):
    with pytest.raises(ValueError, match=fragment):
        cli.config_from_args(parse(*argv))
