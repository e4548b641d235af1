"""PCMANet Live: segment the sounding object in a live scene and publish masks over ZeroMQ.

The CLI behind ``run_live.py``; ``stream.bench`` builds its pipeline with the same functions.

    python run_live.py --camera 0 --mic default        # webcam + microphone
    python run_live.py --demo                          # embedded synthetic scene + demo model
    python run_live.py --video clip.mp4 --max-frames 100
    python run_live.py --camera rtsp://127.0.0.1:8554/cam --zmq tcp://127.0.0.1:5600

Masks go to ``mask/<stream>`` on ``--zmq`` (schema v1, README "Subscribing"), counters to
``stats/<stream>`` once a second. With no source flag the demo runs (``--demo``). Ctrl-C stops
every thread and closes every file within 2 s. User errors (no such camera, microphone or
file, a port in use, weights of another variant, a bad config) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import yaml

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import CheckpointError, load_checkpoint
from pcmanet.config import ConfigError, config_to_dict
from pcmanet.model import PCMANet
from pcmanet.variants import PCMANET_VARIANTS
from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.sync import PairingPolicy
from stream.capture.base import SAMPLE_RATE, SourceError
from stream.capture.camera import CameraSource
from stream.capture.demo import DemoSource
from stream.capture.media_file import MediaFileSource
from stream.engine.engine import StreamingEngine
from stream.run.config import LiveConfig, load_live_config, validate_live_config
from stream.run.pipeline import LivePipeline, PipelineError, Sink
from stream.transport.curve import CurveClientKeys, CurveServerKeys
from stream.transport.messages import ENCODINGS
from stream.transport.publish import DropPolicy, MaskPublisher
from stream.transport.sockets import BindError

logger = logging.getLogger("run_live")


class UserError(Exception):
    """A mistake in the command line or the environment: one line, exit 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run_live.py", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--demo", action="store_true",
                     help="the embedded synthetic sounding-objects scene (default)")
    src.add_argument("--video", metavar="FILE", help="a media file with video and audio")
    src.add_argument("--camera", metavar="DEV", help="camera index (0), video file or stream URL")
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
    p.add_argument("--stream", help="stream name: topic mask/<stream> (default cam0)")
    p.add_argument("--encoding", choices=ENCODINGS, help="mask payload encoding (default mono8)")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--show", action="store_true", help="overlay window with FPS and latency")
    p.add_argument("--record", metavar="DIR", help="keep inputs, masks and timestamps in DIR")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N masks published")
    p.add_argument("--wait-subscriber", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a subscriber before capture starts")
    p.add_argument("--no-pacing", action="store_true",
                   help="--video/--demo: deliver as fast as possible, not in real time")
    p.add_argument("--list-devices", action="store_true", help="list cameras and microphones")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
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
    if args.stream:
        publish = replace(publish, stream=args.stream)
    if args.encoding:
        publish = replace(publish, encoding=args.encoding)
    if args.device:
        engine = replace(engine, device=args.device)
    if args.no_pacing:
        source = replace(source, realtime=False)
    cfg = replace(cfg, publish=publish, engine=engine, source=source)
    validate_live_config(cfg)
    return cfg


def source_description(args: argparse.Namespace) -> dict[str, Any]:
    if args.video:
        return {"kind": "video", "path": args.video}
    if args.camera is not None:
        return {"kind": "camera", "device": args.camera, "mic": args.mic}
    return {"kind": "demo"}


def load_model(args: argparse.Namespace, default: str | None = None
               ) -> tuple[PCMANet, int, str]:
    """-> (model in eval mode, input size, name for headers). Weights: ``--weights``, else
    ``default`` (the config's ``engine.weights``), else the demo model."""
    chosen = args.weights or default
    weights = Path(chosen) if chosen else DEMO_CHECKPOINT
    if not weights.is_file():
        raise UserError(f"weights file {weights} not found")
    if args.vggish:
        if not args.variant:
            raise UserError("--vggish goes with a reference checkpoint: add --variant, "
                            "e.g. --variant resnet50_s4")
        from pcmanet import load_official

        backbone, task = args.variant.rsplit("_", 1)
        if task not in ("s4", "ms3", "avss") or backbone not in ("resnet50", "pvt_v2_b5"):
            raise UserError(f"--variant {args.variant} has no reference checkpoint format; "
                            "use resnet50_s4|ms3|avss or pvt_v2_b5_s4|ms3|avss")
        model = load_official(weights, variant=backbone, task=task, vggish=args.vggish)
        return model, 224, f"{args.variant}:{weights.name}"
    expect = PCMANET_VARIANTS[args.variant] if args.variant else None
    try:
        model, cfg, extra = load_checkpoint(weights, expect=expect)
    except CheckpointError as e:
        hint = ("" if args.variant else
                " (a reference checkpoint? pass --variant NAME --vggish VGGISH.pth)")
        raise CheckpointError(f"{e}{hint}") from None
    size = int(extra.get("data", {}).get("image_size") or 224)
    if model.audio_encoder is None:
        raise UserError(f"{weights}: this model takes VGGish embeddings; pass --vggish PATH")
    return model, size, f"{cfg.name}:{weights.name}"


def curve_keys(cfg: LiveConfig) -> CurveServerKeys | CurveClientKeys | None:
    """The publisher's CurveZMQ keys from ``live.publish.curve`` (None: CurveZMQ off): server
    keys to bind, client keys to connect into a proxy."""
    c = cfg.publish.curve
    from stream.transport.keys import client_keys, server_keys

    if c.server_key_file is not None:
        return client_keys(c.server_key_file, c.client_secret_file)
    if c.server_secret_file is None:
        return None
    return server_keys(c.server_secret_file, c.allowed_clients_dir)


def pick_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here "
                        "(torch.cuda.is_available() is False); use --device cpu")
    if device.type == "cuda":
        from stream.engine.cupy_check import cupy_mismatch

        mismatch = cupy_mismatch()
        if mismatch is not None:
            raise UserError(f"--device {name}: {mismatch}")
    return device


# -- sources -----------------------------------------------------------------------------------


def open_sources(args: argparse.Namespace, cfg: LiveConfig, frames: FrameRing,
                 audio: AudioRing) -> tuple[list[Any], AudioRing | None]:
    """Start the capture threads; -> (sources, the audio ring or None without audio)."""
    s = cfg.source
    if args.mic and args.camera is None:
        raise UserError("--mic goes with --camera (--video and --demo bring their own audio)")
    sources: list[Any] = []
    try:
        if args.video:
            media = MediaFileSource(args.video, frames, audio, realtime=s.realtime)
            media.start()
            sources.append(media)
            if not media.has_audio:
                logger.warning("%s has no audio track: the model hears silence", args.video)
                return sources, None
            return sources, audio
        if args.camera is not None:
            cam = CameraSource(args.camera, frames, fps_hint=s.fps,
                               stream_timeout_s=s.stream_timeout_s, reconnect=s.reconnect)
            if args.mic:
                from stream.capture.mic import MicSource

                mic = MicSource(args.mic, audio)
                mic.start()
                sources.append(mic)
            cam.start()
            sources.append(cam)
            if not args.mic:
                logger.warning("no --mic: the model hears silence (add --mic default)")
                return sources, None
            return sources, audio
        demo = DemoSource(frames, audio, fps=s.fps, size=s.demo_size, seed=s.demo_seed,
                          realtime=s.realtime)
        demo.start()
        sources.append(demo)
        return sources, audio
    except BaseException:
        for src in sources:
            src.stop()
        raise


def list_devices() -> str:
    lines = ["Cameras (OpenCV indices; /dev/video*):"]
    cams = sorted(Path("/dev").glob("video*"))
    lines += [f"  {p.name[5:]}: {p}" for p in cams] or ["  none found"]
    lines.append("Microphones:")
    try:
        from stream.capture.mic import list_audio_devices

        lines.append(list_audio_devices())
    except SourceError as e:
        lines.append(f"  {e}")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@dataclass
class Session:
    """A built, started live pipeline (see :func:`live_session`)."""

    pipeline: LivePipeline
    publisher: MaskPublisher
    engine: StreamingEngine
    sources: list[Any]
    model_name: str
    size: int
    device: torch.device
    # Set on a planned end (max frames, duration, end of input): how long closing the
    # publisher may wait for masks still queued to reach their subscribers. None: not at all
    # (an interrupt, a failure).
    flush_ms: int | None = None


FLUSH_MS = 1000
PLANNED_ENDS = ("max frames reached", "duration reached", "end of input")


@contextlib.contextmanager
def live_session(args: argparse.Namespace, cfg: LiveConfig, engine_mode: str = "stream"
                 ) -> Iterator[Session]:
    """Load the model, bind the publisher, start the sources, build the pipeline; on exit
    stop the sources and close the publisher. ``engine_mode``: "stream" or "clip"."""
    device = pick_device(cfg.engine.device)
    if cfg.engine.cuda_graphs and device.type != "cuda":
        raise UserError("live.engine.cuda_graphs needs a CUDA device: add --device cuda, or "
                        "drop the setting")
    curve = curve_keys(cfg)  # key files are checked before the model loads
    torch.set_num_threads(cfg.engine.threads)
    model, size, name = load_model(args, cfg.engine.weights)
    size = cfg.engine.input_size or size
    if cfg.engine.cim_threshold is not None:
        model.threshold = cfg.engine.cim_threshold
    model.to(device)
    engine = StreamingEngine(model, size, device, spacing_s=cfg.sync.spacing_s,
                             carry=cfg.engine.carry,
                             cache_dtype=torch.float16 if cfg.engine.cache_fp16 else None,
                             mode=engine_mode, audio_rate_hz=cfg.engine.audio_rate_hz,
                             precision=cfg.engine.precision,
                             cuda_graphs=cfg.engine.cuda_graphs)
    publisher = MaskPublisher(cfg.publish.connect or cfg.publish.zmq, cfg.publish.stream,
                              cfg.publish.encoding, connect=cfg.publish.connect is not None,
                              sndhwm=cfg.publish.sndhwm, curve=curve,
                              drop_policy=DropPolicy(cfg.publish.drop_policy),
                              stats_interval_s=cfg.publish.stats_interval_s,
                              heartbeat_s=cfg.publish.heartbeat_s,
                              heartbeat_timeout_s=cfg.publish.heartbeat_timeout_s)
    frames = FrameRing(cfg.source.frame_ring)
    audio_ring = AudioRing(round(cfg.source.audio_ring_s * SAMPLE_RATE))
    publisher.start()
    sources: list[Any] = []
    session: Session | None = None
    try:
        if args.wait_subscriber > 0 and not publisher.wait_for_subscriber(
                publisher.mask_topic, args.wait_subscriber):
            logger.warning("no subscriber after %.1f s; starting anyway", args.wait_subscriber)
        sources, audio = open_sources(args, cfg, frames, audio_ring)
        sinks: list[Sink] = []
        stop_event = threading.Event()  # the overlay window's quit key sets it
        if args.record:
            from stream.run.record import Recorder

            sinks.append(Recorder(args.record, audio, cfg.publish.threshold,
                                  meta={"stream": cfg.publish.stream, "model": name,
                                        "source": source_description(args)}))
        if args.show:
            from stream.run.overlay import Overlay

            sinks.append(Overlay(cfg.publish.threshold, on_quit=stop_event.set))
        pipeline = LivePipeline(
            frames=frames, audio=audio, sources=sources, engine=engine, publisher=publisher,
            threshold=cfg.publish.threshold, model_name=name,
            av_offset_ms=cfg.sync.av_offset_ms, pairing=PairingPolicy(cfg.sync.pairing),
            max_lag_ms=cfg.sync.max_lag_ms, max_wait_ms=cfg.sync.max_wait_ms,
            max_frames=args.max_frames, duration_s=args.duration, sinks=sinks,
            max_consecutive_errors=cfg.engine.max_consecutive_errors, stop_event=stop_event)
        publisher.set_stats_provider(pipeline.counters)
        session = Session(pipeline, publisher, engine, sources, name, size, device)
        yield session
    finally:
        for src in sources:
            src.stop()
        publisher.stop(linger_ms=session.flush_ms if session is not None else None)


def run(args: argparse.Namespace) -> int:
    if args.list_devices:
        print(list_devices())
        return 0
    cfg = resolve_config(args)
    check_limits(args)
    if args.dry_run:
        print(yaml.safe_dump({"live": config_to_dict(cfg)}, sort_keys=False).rstrip())
        print(f"# source: {source_description(args)}")
        print(f"# weights: {args.weights or cfg.engine.weights or DEMO_CHECKPOINT}")
        return 0
    with live_session(args, cfg) as s:
        where = "into the proxy at" if s.publisher.connect else "on"
        print(f"publishing mask/{cfg.publish.stream} {where} {s.publisher.endpoint} "
              f"({cfg.publish.encoding}, auth {s.publisher.auth_mode}); model {s.model_name} "
              f"at {s.size}x{s.size} on {s.device}; Ctrl-C stops", file=sys.stderr, flush=True)
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


def check_limits(args: argparse.Namespace) -> None:
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be >= 1")
    if args.duration is not None and args.duration <= 0:
        raise UserError("--duration must be > 0")


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
            FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
