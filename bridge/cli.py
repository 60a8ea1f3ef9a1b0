"""`ace-companion bridge`: run the DAW bridge against an engine until Ctrl+C."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from bridge.config import HOSTS, INSERT_MODES, RENDER_SOURCES, SNAP_MODES, BridgeConfig, default_output_dir
from engine.client import DEFAULT_URL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine-url", default=os.environ.get("ACE_COMPANION_ENGINE_URL", DEFAULT_URL),
                        help=f"engine base URL (default {DEFAULT_URL} or $ACE_COMPANION_ENGINE_URL)")
    parser.add_argument("--token", default=os.environ.get("ACE_COMPANION_TOKEN"),
                        help="bearer token for the engine (default $ACE_COMPANION_TOKEN)")
    parser.add_argument("--host", choices=HOSTS, default="auto",
                        help="which DAW to talk to; auto listens for REAPER and Ableton at once (default auto)")
    parser.add_argument("--osc-host", default="127.0.0.1",
                        help="address the bridge's OSC ports bind to (default 127.0.0.1: this machine only)")
    parser.add_argument("--osc-port", type=int, default=9110, help="UDP port for /acecomp/... commands (default 9110)")
    parser.add_argument("--reply-port", type=int, default=None,
                        help="send /acecomp replies to this port instead of the sender's port")
    g = parser.add_argument_group("REAPER")
    g.add_argument("--reaper-listen-port", type=int, default=9000,
                   help="UDP port REAPER's OSC device sends feedback to (REAPER: 'Device port') (default 9000)")
    g.add_argument("--reaper-port", type=int, default=8000,
                   help="UDP port REAPER listens on for OSC (REAPER: 'Local listen port') (default 8000)")
    g.add_argument("--reaper-web-url", default=None,
                   help="REAPER web interface, e.g. http://127.0.0.1:8080, to read the meter (BEATPOS)")
    g.add_argument("--reaper-mailbox", default=None,
                   help="folder shared with ace_companion.lua (default ~/.ace-companion/reaper)")
    g.add_argument("--reaper-wake-action", default=None, metavar="COMMAND_ID",
                   help="command id of ace_companion_wake.lua (e.g. _RS1a2b...): the bridge runs it over "
                        "OSC so the script answers at once instead of within 0.1 s")
    g.add_argument("--render-source", choices=RENDER_SOURCES, default="master",
                   help="what ace_companion.lua renders as source audio: the master mix or the selected track "
                        "(default master)")
    g = parser.add_argument_group("Ableton Live")
    g.add_argument("--ableton-port", type=int, default=11000, help="AbletonOSC's UDP port (default 11000)")
    g.add_argument("--ableton-listen-port", type=int, default=11001,
                   help="UDP port AbletonOSC replies to (default 11001; AbletonOSC always uses 11001)")
    g.add_argument("--ableton-insert-port", type=int, default=11010,
                   help="UDP port of the AceCompanion Remote Script (default 11010)")
    g = parser.add_argument_group("MIDI")
    g.add_argument("--midi-in", default=None, help="MIDI input port name (clock, song position, triggers)")
    g.add_argument("--midi-virtual", action="store_true",
                   help="create a virtual MIDI input named --midi-in or 'ACE Companion' (macOS/Linux)")
    g.add_argument("--midi-map", action="append", default=[], metavar="MAPPING",
                   help="trigger mapping like note:60=repaint, cc:20=generate, note:36@10=stems, note:64=jam "
                        "(start/stop), note:65=sketch (repeatable)")
    g.add_argument("--list-midi", action="store_true", help="list MIDI inputs and exit")
    g = parser.add_argument_group("clips and requests")
    g.add_argument("--output", default=default_output_dir(),
                   help="folder for clips, one sub-folder per project (default ~/ACE-Companion/clips)")
    g.add_argument("--project", default=None, help="project name for file names (default: from the DAW)")
    g.add_argument("--sample-rate", type=int, default=44100,
                   help="host sample rate when the DAW does not report it (Ableton) (default 44100)")
    g.add_argument("--source-file", default=None,
                   help="the song's mix exported from the start (for DAWs that cannot render: Ableton, MIDI)")
    g.add_argument("--source-offset", type=float, default=0.0,
                   help="project time in seconds of the source file's first sample (default 0)")
    g.add_argument("--no-source-cache", action="store_true",
                   help="render and upload the source for every action, even when nothing changed")
    g.add_argument("--snap", choices=SNAP_MODES, default="nearest", help="snap regions to bars (default nearest)")
    g.add_argument("--insert", choices=INSERT_MODES, default="replace",
                   help="replace the selection, add on the selected track, put on a new track, or only offer "
                        "the file for drag-and-drop (default replace)")
    g.add_argument("--continue-bars", type=float, default=None,
                   help="bars to add when continuing (default: as many as the region)")
    g.add_argument("--stems", default="drums,bass,vocals", help="stems to extract (default drums,bass,vocals)")
    g.add_argument("--extract-dit", default="acestep-v15-base",
                   help="DiT folder for stems/extract, which need a base model (default acestep-v15-base; "
                        "'' = the engine's loaded DiT)")
    g.add_argument("--max-context", type=float, default=240.0,
                   help="longest model input in seconds around a region (default 240)")
    g.add_argument("--request", default=None, metavar="JSON",
                   help='default request fields, e.g. \'{"caption": "lofi hip hop", "inference_steps": 8}\'')
    g.add_argument("--lora", default=None, metavar="NAME",
                   help="LoRA adapter (folder in the engine's checkpoints/loras) for every request; '' = none")
    g.add_argument("--lora-scale", type=float, default=None, metavar="S", help="LoRA strength 0-1 (default 1)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def config_from_args(args: argparse.Namespace) -> BridgeConfig:
    defaults = {}
    if args.request:
        try:
            defaults = json.loads(args.request)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--request is not valid JSON: {exc.msg}") from None
        if not isinstance(defaults, dict):
            raise ValueError("--request must be a JSON object")
    if args.lora is not None:
        defaults["lora"] = args.lora
    if args.lora_scale is not None:
        if not 0.0 <= args.lora_scale <= 1.0:
            raise ValueError(f"--lora-scale {args.lora_scale} is outside 0-1")
        defaults["lora_scale"] = args.lora_scale
    config = BridgeConfig(
        engine_url=args.engine_url, token=args.token, host=args.host, osc_host=args.osc_host,
        osc_port=args.osc_port, reply_port=args.reply_port, reaper_listen_port=args.reaper_listen_port,
        reaper_port=args.reaper_port, reaper_web_url=args.reaper_web_url, reaper_mailbox=args.reaper_mailbox,
        render_source=args.render_source, reaper_wake_action=args.reaper_wake_action,
        source_cache=not args.no_source_cache,
        ableton_port=args.ableton_port, ableton_listen_port=args.ableton_listen_port,
        ableton_insert_port=args.ableton_insert_port, midi_in=args.midi_in, midi_virtual=args.midi_virtual,
        midi_mappings=list(args.midi_map), output_dir=os.path.abspath(os.path.expanduser(args.output)),
        project=args.project, sample_rate=args.sample_rate, source_file=args.source_file,
        source_offset_s=args.source_offset, snap=args.snap, insert_mode=args.insert,
        continue_bars=args.continue_bars, stems=tuple(s.strip() for s in args.stems.split(",") if s.strip()),
        max_context_s=args.max_context, request_defaults=defaults, extract_dit=args.extract_dit or None,
    )
    config.validate()
    if args.source_file and not os.path.isfile(args.source_file):
        raise ValueError(f"--source-file {args.source_file} does not exist")
    return config


def quiet_http_logs(level: str) -> None:
    """httpx logs every request (engine calls, the once-a-second BEATPOS poll) at INFO: only at debug."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if level.lower() == "debug" else logging.WARNING)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="bridge: %(levelname)s %(message)s")
    quiet_http_logs(args.log_level)
    if args.list_midi:
        from bridge.midi import MidiUnavailable, list_inputs
        try:
            names = list_inputs()
        except MidiUnavailable as exc:
            print(f"ace-companion bridge: {exc}", file=sys.stderr)
            return 2
        print("\n".join(names) if names else "no MIDI inputs")
        return 0
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"ace-companion bridge: {exc}", file=sys.stderr)
        return 2
    from bridge.app import BridgeApp
    app = BridgeApp(config)
    try:
        app.start()
    except OSError as exc:
        print(f"ace-companion bridge: cannot open the OSC port {config.osc_host}:{config.osc_port}: {exc}",
              file=sys.stderr)
        app.stop()
        return 2
    try:
        health = app.client.health()
        logging.info("engine at %s: %s on %s", config.engine_url, health.get("dit"), health.get("device"))
    except Exception as exc:
        logging.warning("engine at %s not reachable yet (%s); actions will fail until it runs", config.engine_url, exc)
    logging.info("OSC commands on %s:%d; adapters: %s; clips in %s", config.osc_host, app.commands.port,
                 ", ".join(app.adapters) or "none", config.output_dir)
    for name, error in app.adapter_errors.items():
        logging.warning("%s: %s", name, error)
    app.subscribe(_log_event)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        last = None
        while not stop.wait(5.0):
            status = {name: s["connected"] for name, s in app.adapters_status().items()}
            if status != last:
                logging.info("connected: %s", ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in status.items()))
                last = status
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
    return 0


def _log_event(event: dict) -> None:
    kind = event.get("type")
    if kind == "job":
        logging.info("%s: job %s submitted", event["action"], ", ".join(event["job_ids"]))
    elif kind == "result":
        where = f"inserted via {event['adapter']}" if event["inserted"] else event["message"]
        logging.info("clip %s at %.3f s (%s)", event["path"], event["position_s"], where)
    elif kind == "error":
        logging.warning("%s: %s", event.get("job_id") or event.get("action"), event["message"])
    elif kind == "done":
        logging.info("%s finished: %s", event["action"], event["state"])
