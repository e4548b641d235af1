"""Building a live run: the model, the publisher, the sources and the pipeline, as context
managers that stop the sources and close the publisher on exit.

* :func:`live_session`: one stream, :class:`~stream.run.pipeline.LivePipeline` (the
  multi-stream pipeline with one lane) with the :class:`~stream.engine.engine.StreamingEngine`
  (clip mode, sinks).
* :func:`multi_session`: N streams, :class:`~stream.run.multi.MultiPipeline` with the
  :class:`~stream.engine.batch.BatchedEngine`, every stream on one publisher socket.

``run_live.py`` (:mod:`stream.run.app`) and ``stream.bench`` build their runs with these.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import CheckpointError, load_checkpoint
from pcmanet.cli import device_problem
from pcmanet.model import PCMANet
from pcmanet.variants import PCMANET_VARIANTS
from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.sync import PairingPolicy
from stream.capture.base import SAMPLE_RATE, SourceError
from stream.engine.batch import DEFAULT_BUCKETS, BatchedEngine, pad_to
from stream.engine.cuda_graphs import GraphedSteps
from stream.engine.engine import StreamingEngine
from stream.run.config import LiveConfig
from stream.run.multi import Lane, MultiPipeline
from stream.run.pipeline import LivePipeline, Sink
from stream.run.streams import StreamSpec, UserError, open_sources, resolve_streams
from stream.transport.curve import CurveClientKeys, CurveServerKeys
from stream.transport.publish import DropPolicy, MaskPublisher

logger = logging.getLogger("run_live")


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
    problem = device_problem(name)
    if problem is not None:
        raise UserError(problem)
    device = torch.device(name)
    if device.type == "cuda":
        from stream.engine.cupy_check import cupy_mismatch

        mismatch = cupy_mismatch()
        if mismatch is not None:
            raise UserError(f"--device {name}: {mismatch}")
    return device


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
    stop the sources and close the publisher. ``engine_mode``: "stream" or "clip". One
    stream (the command line's single source)."""
    (spec,) = resolve_streams(args, cfg)
    device, curve, model, size, name = _model_and_keys(args, cfg)
    engine = StreamingEngine(model, size, device, spacing_s=cfg.sync.spacing_s,
                             carry=cfg.engine.carry,
                             cache_dtype=torch.float16 if cfg.engine.cache_fp16 else None,
                             mode=engine_mode, audio_rate_hz=cfg.engine.audio_rate_hz,
                             precision=cfg.engine.precision,
                             cuda_graphs=cfg.engine.cuda_graphs,
                             compile=compile_mode(cfg) if engine_mode == "stream" else "off")
    publisher = _publisher(cfg, spec.name, curve)
    frames = FrameRing(cfg.source.frame_ring)
    audio_ring = AudioRing(round(cfg.source.audio_ring_s * SAMPLE_RATE))
    publisher.start()
    sources: list[Any] = []
    session: Session | None = None
    try:
        _wait_for_subscriber(publisher, args.wait_subscriber)
        compile_step(engine.batch, cfg, streams=1)
        sources, audio = open_sources(spec, cfg, frames, audio_ring)
        sinks: list[Sink] = []
        stop_event = threading.Event()  # the overlay window's quit key sets it
        if args.record:
            from stream.run.record import Recorder

            sinks.append(Recorder(args.record, audio, cfg.publish.threshold,
                                  meta={"stream": cfg.publish.stream, "model": name,
                                        "source": spec.describe()}))
        if args.show:
            from stream.run.overlay import Overlay

            sinks.append(Overlay(cfg.publish.threshold, on_quit=stop_event.set))
        pipeline = LivePipeline(
            frames=frames, audio=audio, sources=sources, engine=engine, publisher=publisher,
            threshold=cfg.publish.threshold, model_name=name,
            av_offset_ms=cfg.sync.av_offset_ms, pairing=PairingPolicy(cfg.sync.pairing),
            max_lag_ms=cfg.sync.max_lag_ms, max_wait_ms=cfg.sync.max_wait_ms,
            max_frames=args.max_frames, duration_s=args.duration, sinks=sinks,
            max_consecutive_errors=cfg.engine.max_consecutive_errors, stop_event=stop_event,
            take=spec.take)
        publisher.set_stats_provider(pipeline.counters)
        session = Session(pipeline, publisher, engine, sources, name, size, device)
        yield session
    finally:
        for src in sources:
            src.stop()
        publisher.stop(linger_ms=session.flush_ms if session is not None else None)


def compile_mode(cfg: LiveConfig) -> str:
    """``live.engine.compile``, except that CUDA graphs replay the uncompiled step: with
    ``cuda_graphs`` the default ``auto`` means off (``on`` is refused by ``_model_and_keys``)."""
    return "off" if cfg.engine.cuda_graphs else str(cfg.engine.compile)


def compile_step(engine: BatchedEngine, cfg: LiveConfig, streams: int) -> None:
    """Compile the static step's variants this run will use (``live.engine.compile``): before
    capture starts with ``compile_wait``, else in a low-priority background thread while the
    eager step serves frames; or capture their CUDA graphs (``live.engine.cuda_graphs``) before
    capture starts. Batches of 1 .. ``streams`` rows are padded to the engine's buckets."""
    steps = engine.steps_fn
    if not steps.compiling and not isinstance(steps, GraphedSteps):
        return
    sizes = sorted({pad_to(n, engine.buckets) for n in range(1, min(streams, cfg.engine.max_batch)
                                                             + 1)})
    embeds = (True, False) if cfg.engine.audio_rate_hz is not None else (True,)
    variants = [(P, embed) for P in sizes for embed in embeds]
    if isinstance(steps, GraphedSteps):  # live.engine.cuda_graphs: capture them all now
        steps.warm(variants)
        return
    if cfg.engine.compile_wait:
        logger.info("compiling the engine step (%d variant(s)) before capture starts",
                    len(variants))
        steps.warm(variants)
    else:
        steps.warm_in_background(variants)


def _wait_for_subscriber(publisher: MaskPublisher, seconds: float) -> None:
    """``--wait-subscriber S``: wait up to S seconds for a subscriber before capture starts."""
    if seconds > 0 and not publisher.wait_for_subscriber(publisher.mask_topic, seconds):
        logger.warning("no subscriber after %.1f s; starting anyway", seconds)


def _model_and_keys(args: argparse.Namespace, cfg: LiveConfig
                    ) -> tuple[torch.device, CurveServerKeys | CurveClientKeys | None, PCMANet,
                               int, str]:
    """-> (device, CurveZMQ keys, model on the device, input size, model name)."""
    if cfg.engine.cuda_graphs and cfg.engine.compile == "on":
        raise UserError("live.engine.cuda_graphs and live.engine.compile=on are exclusive (a "
                        "CUDA graph replays the uncompiled step); set one of them off")
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
    return device, curve, model, size, name


def _publisher(cfg: LiveConfig, stream: str,
               curve: CurveServerKeys | CurveClientKeys | None, streams: int = 1
               ) -> MaskPublisher:
    """The publisher; its high-water mark is ``publish.sndhwm`` per stream (a batched step
    publishes one mask per stream at once, and a subscriber's queue holds every topic)."""
    p = cfg.publish
    return MaskPublisher(p.connect or p.zmq, stream, p.encoding, connect=p.connect is not None,
                         sndhwm=p.sndhwm * streams, curve=curve,
                         drop_policy=DropPolicy(p.drop_policy),
                         stats_interval_s=p.stats_interval_s, heartbeat_s=p.heartbeat_s,
                         heartbeat_timeout_s=p.heartbeat_timeout_s, frames=p.frames.options())


@dataclass
class MultiSession:
    """A built, started multi-stream pipeline (see :func:`multi_session`)."""

    pipeline: MultiPipeline
    publisher: MaskPublisher
    engine: BatchedEngine
    specs: list[StreamSpec]
    model_name: str
    size: int
    device: torch.device
    flush_ms: int | None = None  # as Session.flush_ms


@contextlib.contextmanager
def multi_session(args: argparse.Namespace, cfg: LiveConfig, specs: list[StreamSpec]
                  ) -> Iterator[MultiSession]:
    """N streams, one model, one publisher socket (``mask/<name>``, ``stats/<name>`` each):
    load the model, bind, start every stream's sources, build the pipeline; on exit stop them
    all and close the publisher. A source that cannot open is a user error naming its stream."""
    if args.show or args.record:
        raise UserError("--show and --record take one stream; several are configured")
    device, curve, model, size, name = _model_and_keys(args, cfg)
    e = cfg.engine
    # Compiled, a batch size is a graph: pad to powers of two unless buckets are given.
    buckets = e.batch_buckets or (DEFAULT_BUCKETS if compile_mode(cfg) != "off" else None)
    engine = BatchedEngine(model, size, device, spacing_s=cfg.sync.spacing_s, carry=e.carry,
                           cache_dtype=torch.float16 if e.cache_fp16 else None,
                           audio_rate_hz=e.audio_rate_hz, precision=e.precision,
                           buckets=buckets, compile=compile_mode(cfg), streams=len(specs),
                           graphs=e.cuda_graphs)
    publisher = _publisher(cfg, specs[0].name, curve, streams=len(specs))
    lanes: list[Lane] = []
    session: MultiSession | None = None
    publisher.start()
    try:
        _wait_for_subscriber(publisher, args.wait_subscriber)
        compile_step(engine, cfg, streams=len(specs))
        for spec in specs:
            frames = FrameRing(cfg.source.frame_ring)
            ring = AudioRing(round(cfg.source.audio_ring_s * SAMPLE_RATE))
            try:
                sources, audio = open_sources(spec, cfg, frames, ring)
            except SourceError as err:
                raise SourceError(f"stream {spec.name}: {err}") from None
            lanes.append(Lane(spec.name, frames, audio, sources, engine.new_stream(),
                              av_offset_ms=spec.av_offset_ms,
                              pairing=PairingPolicy(cfg.sync.pairing),
                              max_lag_ms=cfg.sync.max_lag_ms, max_wait_ms=cfg.sync.max_wait_ms,
                              take=spec.take))
        pipeline = MultiPipeline(lanes=lanes, engine=engine, publisher=publisher,
                                 threshold=cfg.publish.threshold, model_name=name,
                                 max_batch=e.max_batch, max_frames=args.max_frames,
                                 duration_s=args.duration,
                                 max_consecutive_errors=e.max_consecutive_errors)
        for lane in lanes:
            if lane.name != publisher.stream:
                publisher.add_stream(lane.name)
            publisher.set_stats_provider(lane.counters, lane.name)
        session = MultiSession(pipeline, publisher, engine, specs, name, size, device)
        yield session
    finally:
        for lane in lanes:
            for src in lane.sources:
                src.stop()
        publisher.stop(linger_ms=session.flush_ms if session is not None else None)
