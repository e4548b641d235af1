"""PCMANet Live: segment the sounding object in a live scene and publish masks over ZeroMQ.

The CLI behind ``run_live.py``; ``stream.bench`` builds its pipeline with the same functions.

    python run_live.py --camera 0 --mic default        # webcam + microphone
    python run_live.py --demo                          # embedded synthetic scene + demo model
    python run_live.py --video clip.mp4 --max-frames 100
    python run_live.py --camera rtsp://127.0.0.1:8554/cam --zmq tcp://127.0.0.1:5600
    python run_live.py --video a.mp4 --video b.mp4 --camera udp://...   # 3 streams, cam0..2
    python run_live.py --config configs/live/multi.yaml                  # live.streams
    python run_live.py --demo --view 127.0.0.1:8080                      # watch in a browser

Masks go to ``mask/<stream>`` on ``--zmq`` (schema v1, docs/protocol.md), counters to
``stats/<stream>`` once a second; with ``--frames`` (or ``--view``, which serves the browser
viewer of this run, docs/viewer.md) also each mask's frame as ``frame/<stream>``. With no source
flag the demo runs (``--demo``). Ctrl-C stops every thread and closes every file within 2 s.
User errors (no such camera, microphone or file, a port in use, weights of another variant, a
bad config) print one line and exit 2.

Several sources (repeated ``--camera`` / ``--video``, or ``live.streams``) run in one process
with one batched engine (:mod:`stream.run.multi`); each stream publishes ``mask/<name>`` and
``stats/<name>`` on the one socket, and one stream's end or fault leaves the others running.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import CheckpointError
from pcmanet.cli import Parser
from pcmanet.config import ConfigError, config_to_dict
from pcmanet.variants import PCMANET_VARIANTS
from stream.capture.base import SourceError
from stream.engine.compiled import CompileError, exit_code
from stream.run.config import LiveConfig, load_live_config, validate_live_config
from stream.run.pipeline import PipelineError, RunSummary
from stream.run.session import (  # noqa: F401  (stream.bench builds runs through app)
    FLUSH_MS,
    PLANNED_ENDS,
    MultiSession,
    Session,
    curve_keys,
    live_session,
    load_model,
    multi_session,
    pick_device,
)
from stream.run.streams import StreamSpec, UserError, check_media_files, resolve_streams
from stream.run.viewing import check_view, open_viewer
from stream.transport.messages import ENCODINGS
from stream.transport.sockets import BindError

logger = logging.getLogger("run_live")


class _AddSource(argparse.Action):
    """--camera / --video: repeatable; ``sources`` keeps (kind, value) in command-line order,
    and ``camera`` / ``video`` the last value (the single-stream names of before)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        kind = "camera" if option_string == "--camera" else "video"
        namespace.sources = [*(getattr(namespace, "sources", None) or []), (kind, values)]
        setattr(namespace, self.dest, values)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="run_live.py", description=__doc__.split("\n")[0])
    p.add_argument("--demo", action="store_true",
                   help="the embedded synthetic sounding-objects scene (default)")
    p.add_argument("--video", metavar="FILE", action=_AddSource,
                   help="a media file with video and audio (repeatable: one stream each)")
    p.add_argument("--camera", metavar="DEV", action=_AddSource,
                   help="camera index (0), video file or stream URL (repeatable)")
    p.set_defaults(sources=[])
    p.add_argument("--mic", metavar="NAME", help="microphone with --camera: 'default', a name "
                   "(substring) or an index; without it the model hears silence")
    p.add_argument("--weights", default=None,
                   help=f"our checkpoint (default: the demo model {DEMO_CHECKPOINT.name}), or "
                        "a reference checkpoint with --variant")
    p.add_argument("--variant", choices=sorted(PCMANET_VARIANTS),
                   help="the variant the weights must be; a reference (official) checkpoint "
                        "needs it, e.g. resnet50_s4, and --vggish")
    p.add_argument("--vggish", metavar="PATH", help="VGGish weights for a reference checkpoint")
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="live config file(s) (a 'live:' mapping; calib tools write them)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one setting, e.g. --set live.engine.threads=1")
    p.add_argument("--zmq", help="publish address (default tcp://127.0.0.1:5555)")
    p.add_argument("--zmq-connect", metavar="URL",
                   help="publish into a stream.proxy frontend at URL (connect, not bind)")
    p.add_argument("--stream", action="append", default=[],
                   help="stream name: topic mask/<stream> (default cam0; several sources: one "
                        "--stream each, in order, default cam0, cam1, ...)")
    p.add_argument("--encoding", choices=ENCODINGS, help="mask payload encoding (default mono8)")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--show", action="store_true", help="overlay window with FPS and latency")
    p.add_argument("--frames", action="store_true",
                   help="also publish frame/<stream>: each mask's frame as JPEG "
                        "(live.publish.frames sets quality, every n-th, max side)")
    p.add_argument("--view", metavar="HOST:PORT",
                   help="serve the browser viewer of this run there, e.g. 127.0.0.1:8080 "
                        "(turns --frames on)")
    p.add_argument("--record", metavar="DIR", help="keep inputs, masks and timestamps in DIR")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--max-frames", type=int, metavar="N",
                   help="stop after N masks published (several streams: N per stream)")
    p.add_argument("--wait-subscriber", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a subscriber before capture starts")
    p.add_argument("--no-pacing", action="store_true",
                   help="--video/--demo: deliver as fast as possible, not in real time")
    p.add_argument("--list-devices", action="store_true", help="list cameras and microphones")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and streams and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


# -- configuration -----------------------------------------------------------------------------


def resolve_config(args: argparse.Namespace) -> LiveConfig:
    """Config files, --set overrides, then the dedicated flags."""
    cfg = load_live_config(args.config, args.overrides)
    publish, engine, source = cfg.publish, cfg.engine, cfg.source
    if args.zmq:
        publish = replace(publish, zmq=args.zmq)
    if args.zmq_connect:
        if args.zmq:
            raise UserError("--zmq binds and --zmq-connect connects to a proxy: give one")
        publish = replace(publish, connect=args.zmq_connect)
    if len(args.stream) == 1:
        publish = replace(publish, stream=args.stream[0])
    if args.encoding:
        publish = replace(publish, encoding=args.encoding)
    if args.device:
        engine = replace(engine, device=args.device)
    if args.no_pacing:
        source = replace(source, realtime=False)
    if args.view:
        check_view(args.view, publish.connect is not None)
    if args.frames or args.view:
        publish = replace(publish, frames=replace(publish.frames, enabled=True))
    cfg = replace(cfg, publish=publish, engine=engine, source=source)
    validate_live_config(cfg)
    return cfg


def is_multi(args: argparse.Namespace, cfg: LiveConfig, specs: list[StreamSpec]) -> bool:
    """Several streams, or live.streams: the multi-stream run (one source: as before)."""
    return len(specs) > 1 or bool(cfg.streams)


# -- main --------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.list_devices:
        from stream.capture.devices import list_devices

        print(list_devices())
        return 0
    cfg = resolve_config(args)
    check_limits(args, cfg)
    specs = resolve_streams(args, cfg)
    check_media_files(specs)
    if args.dry_run:
        print(yaml.safe_dump({"live": config_to_dict(cfg)}, sort_keys=False).rstrip())
        if is_multi(args, cfg, specs):
            for spec in specs:
                print(f"# stream {spec.name}: {spec.describe()} (take {spec.take}, "
                      f"av_offset_ms {spec.av_offset_ms:g})")
        else:
            print(f"# source: {specs[0].describe()}")
        print(f"# weights: {args.weights or cfg.engine.weights or DEMO_CHECKPOINT}")
        return 0
    if is_multi(args, cfg, specs):
        return run_multi(args, cfg, specs)
    with live_session(args, cfg) as s, \
            open_viewer(args.view, s.publisher, curve_keys(cfg)) as page:
        where = "into the proxy at" if s.publisher.connect else "on"
        print(f"publishing mask/{cfg.publish.stream} {where} {s.publisher.endpoint} "
              f"({cfg.publish.encoding}, auth {s.publisher.auth_mode}); model {s.model_name} "
              f"at {s.size}x{s.size} on {s.device}; Ctrl-C stops", file=sys.stderr, flush=True)
        print_view(page)
        t0 = time.monotonic()
        summary = s.pipeline.run()
        elapsed = time.monotonic() - t0
        if summary.reason in PLANNED_ENDS:        # masks still queued reach their subscribers
            s.flush_ms = FLUSH_MS
    ring = summary.counters["frame_ring"]
    print(f"stopped ({summary.reason}): {summary.published} masks in {elapsed:.1f} s "
          f"({summary.published / max(elapsed, 1e-9):.1f} FPS); frames captured "
          f"{ring['written']}, dropped before the engine {ring['dropped']}; "
          f"frame errors {summary.frame_errors}", file=sys.stderr)
    return 0


def run_multi(args: argparse.Namespace, cfg: LiveConfig, specs: list[StreamSpec]) -> int:
    """Several streams in this process: run them and print one line per stream."""
    with multi_session(args, cfg, specs) as s, \
            open_viewer(args.view, s.publisher, curve_keys(cfg)) as page:
        where = "into the proxy at" if s.publisher.connect else "on"
        names = ", ".join(f"mask/{spec.name}" for spec in specs)
        print(f"publishing {names} {where} {s.publisher.endpoint} ({cfg.publish.encoding}, "
              f"auth {s.publisher.auth_mode}); model {s.model_name} at {s.size}x{s.size} on "
              f"{s.device}, batches of up to {cfg.engine.max_batch}; Ctrl-C stops",
              file=sys.stderr, flush=True)
        print_view(page)
        t0 = time.monotonic()
        summary = s.pipeline.run()
        elapsed = time.monotonic() - t0
        if summary.reason in PLANNED_ENDS:
            s.flush_ms = FLUSH_MS
    print_streams(summary, elapsed)
    return 0


def print_view(page: str | None) -> None:
    """--view: where to open the viewer."""
    if page is not None:
        print(f"viewer on {page}", file=sys.stderr, flush=True)


def print_streams(summary: RunSummary, elapsed: float) -> None:
    batch = summary.counters["batch"]
    print(f"stopped ({summary.reason}): {summary.published} masks from "
          f"{len(summary.counters['streams'])} streams in {elapsed:.1f} s; "
          f"{batch['steps']} batched steps, mean batch {batch['mean_size']:.2f}", file=sys.stderr)
    for name, c in summary.counters["streams"].items():
        ring, eng = c["frame_ring"], c["engine"]
        why = f": {c['error']}" if c["error"] else ""
        print(f"  {name} ({c['state']}{why}): {eng['published']} masks "
              f"({eng['published'] / max(elapsed, 1e-9):.1f} FPS); frames captured "
              f"{ring['written']}, dropped before the engine {ring['dropped']}; frame errors "
              f"{eng['frame_errors']}", file=sys.stderr)


def check_limits(args: argparse.Namespace, cfg: LiveConfig) -> None:
    """Flags whose mistakes can be seen before anything is loaded or written."""
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames {args.max_frames}: must be >= 1")
    if args.duration is not None and not args.duration > 0:
        raise UserError(f"--duration {args.duration:g}: must be > 0 seconds")
    if not 0 <= args.wait_subscriber < float("inf"):
        raise UserError(f"--wait-subscriber {args.wait_subscriber:g}: must be >= 0 seconds "
                        "(0: do not wait)")
    pick_device(cfg.engine.device)
    if args.record:
        check_record_dir(args.record)


def check_record_dir(path: str) -> None:
    """--record DIR must be a new or empty folder that can be created: probe by creating the
    first missing folder and removing it again, so a refusal comes before the model loads and
    leaves nothing behind."""
    target = Path(path)
    if target.exists():
        if not target.is_dir():
            raise UserError(f"--record {path}: exists and is not a folder; give a new folder")
        if any(target.iterdir()):
            raise UserError(f"--record {path}: the folder is not empty; give a new folder")
        return
    missing = target
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    try:
        missing.mkdir()
        missing.rmdir()
    except OSError as e:
        raise UserError(f"--record {path}: cannot create a folder there "
                        f"({e.strerror or e}); give a writable folder") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then keeps it
    # ignored, so `kill -INT` from a supervisor (or a test) would otherwise do nothing.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if hasattr(signal, "SIGUSR1"):  # kill -USR1 PID: every thread's stack to stderr (hangs)
        with contextlib.suppress(OSError, ValueError, AttributeError):  # stderr has no fd
            faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, ConfigError, CheckpointError, SourceError, BindError, PipelineError,
            CompileError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(exit_code(main()))
