"""Live settings: YAML (a top-level ``live:`` mapping) -> frozen dataclasses.

``run_live.py --config FILE`` (repeatable, later files win) and the ``calib`` tools' fragments
use this format; any key may be left out. Example::

    live:
      sync: {av_offset_ms: 40}
      engine: {threads: 2, carry: {enabled: true, refresh_every: 8}}
      publish: {encoding: png, frames: {enabled: true, every: 2}}

Several streams in one process (``streams:``; each publishes ``mask/<name>``)::

    live:
      engine: {max_batch: 8}
      streams:
        - {name: door, source: 0, mic: default}
        - {name: hall, source: "rtsp://10.0.0.5/cam", av_offset_ms: 40}
        - {name: demo, source: "demo:3", fps: 15}

The model comes from ``--weights`` or ``engine.weights`` (our checkpoint carries its config);
at run time the CIM threshold (``engine.cim_threshold``), the input size (``engine.input_size``)
and how often the audio embedding is recomputed (``engine.audio_rate_hz``) can be changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from pcmanet.config import ConfigError, from_mapping, load_yaml, merge, parse_override
from stream.buffers.sync import PairingPolicy
from stream.capture.reconnect import ReconnectPolicy
from stream.engine.engine import CarryConfig
from stream.transport.frames import FrameOptions, option_problems
from stream.transport.messages import ENCODINGS, STREAM_NAME

PAIRING_POLICIES = tuple(p.value for p in PairingPolicy)  # latest | exact
TAKE_POLICIES = ("newest", "all")


@dataclass(frozen=True)
class SourceSettings:
    fps: float = 30.0                 # demo source frame rate; camera: requested rate
    demo_seed: int = 7                # demo scene seed
    demo_size: int = 224              # demo frame side, pixels
    frame_ring: int = 4               # frames buffered between capture and engine (drop-oldest)
    audio_ring_s: float = 10.0        # seconds of audio kept
    realtime: bool = True             # media files: pace to their timestamps
    stream_timeout_s: float = 10.0    # URL: longest wait to open it and for each read
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)  # camera / URL outages
    take: str = "newest"              # newest (older unread frames dropped, counted) | all
    #                                   (every frame in order; the ring still drops on overflow)


@dataclass(frozen=True)
class SyncSettings:
    av_offset_ms: float = 0.0         # audio window ends at t_capture + offset (calib.av_offset)
    pairing: str = "latest"           # latest (never wait; window may end up to max_lag_ms
    #                                   early) | exact (wait up to max_wait_ms for it)
    max_lag_ms: float = 40.0          # latest: audio further behind than this is late
    max_wait_ms: float = 50.0         # exact: longest wait for late audio per frame
    spacing_s: float = 1.0            # time between the T frames of the model's window


@dataclass(frozen=True)
class EngineSettings:
    device: str = "cpu"               # cpu | cuda | cuda:N
    weights: str | None = None        # checkpoint (None: the demo model; --weights wins)
    input_size: int | None = None     # model input side, multiple of 32 (None: the checkpoint's)
    audio_rate_hz: float | None = None  # audio embeddings per second (None: every frame)
    threads: int = 1                  # torch CPU threads (1 leaves a core for capture, publishing)
    cim_threshold: float | None = None  # CIM threshold (None: the checkpoint's)
    cache_fp16: bool = False          # store cached features in float16
    precision: str = "fp32"           # fp32 | bf16 (autocast; pays on GPUs with bf16 units)
    cuda_graphs: bool = False         # CUDA only: the step replayed from a CUDA graph per bucket
    carry: CarryConfig = field(default_factory=CarryConfig)
    max_consecutive_errors: int = 10  # frame failures in a row that stop the run (the stream)
    compile: str | bool = "auto"      # off | on | auto: the static step compiled (auto: where
    #                                   a C++ compiler exists and it compiles, else eager; on
    #                                   the CPU by a builder process into an on-disk cache:
    #                                   docs/static_step.md); YAML reads bare off/on as
    #                                   booleans: taken as "off"/"on"
    compile_wait: bool = False        # compile before capture starts (false: in the background,
    #                                   at low priority, while the eager step serves frames)
    max_batch: int = 8                # several streams: most frames (streams) per batched step

    batch_buckets: tuple[int, ...] | None = None  # pad batches to these sizes (static shapes
    #                                   for CUDA graphs), e.g. [1, 2, 4, 8]; null: no padding

    def __post_init__(self) -> None:
        if isinstance(self.compile, bool):
            object.__setattr__(self, "compile", "on" if self.compile else "off")


@dataclass(frozen=True)
class CurveSettings:
    server_secret_file: str | None = None   # publisher's .key_secret (python -m stream.keys)
    allowed_clients_dir: str | None = None  # *.key of the clients let in (None: any client)
    server_key_file: str | None = None      # with publish.connect: the proxy's server.key
    client_secret_file: str | None = None   # with publish.connect: this publisher's .key_secret


@dataclass(frozen=True)
class FrameSettings:
    """The optional ``frame/<stream>`` topic: the frames the masks were computed on, as JPEG
    (``stream.transport.frames``; the viewer draws masks on them)."""

    enabled: bool = False             # off: masks and stats only (run_live --frames/--view: on)
    every: int = 1                    # one frame each `every` masks
    quality: int = 80                 # JPEG quality, 1..100
    max_side: int | None = 640        # longer side scaled down to this (null: source size)

    def options(self) -> FrameOptions | None:
        """The publisher's FrameOptions; None when off."""
        if not self.enabled:
            return None
        return FrameOptions(every=self.every, quality=self.quality, max_side=self.max_side)


@dataclass(frozen=True)
class PublishSettings:
    zmq: str = "tcp://127.0.0.1:5555"  # bind address (loopback unless told otherwise)
    connect: str | None = None        # a stream.proxy frontend to connect to instead of binding
    stream: str = "cam0"              # topic mask/<stream>
    encoding: str = "mono8"           # mono8 | png | rle | prob16
    threshold: float = 0.5            # mask = prob > threshold
    sndhwm: int = 2                   # send high-water mark per subscriber
    drop_policy: str = "counted"      # counted (drops counted, shared) | per_subscriber
    stats_interval_s: float = 1.0     # stats/<stream> period
    heartbeat_s: float | None = 0.5   # PING period; null: no heartbeats
    heartbeat_timeout_s: float = 1.5  # a subscriber silent this long is disconnected
    curve: CurveSettings = field(default_factory=CurveSettings)  # CurveZMQ (off by default)
    frames: FrameSettings = field(default_factory=FrameSettings)  # frame/<stream> (off)


@dataclass(frozen=True)
class StreamSettings:
    """One stream of a multi-stream run; the fields left null take live.source / live.sync."""

    name: str = ""                    # topic mask/<name> (default cam<i>)
    source: str | int = "demo"        # demo | demo:SEED | camera index | media file | URL
    mic: str | int | None = None      # microphone for a camera (name, index, 'default')
    av_offset_ms: float | None = None  # this stream's A/V offset (calib.av_offset)
    fps: float | None = None          # demo frame rate; camera: requested rate
    realtime: bool | None = None      # media file / demo: pace in real time
    take: str | None = None           # newest | all


@dataclass(frozen=True)
class LiveConfig:
    source: SourceSettings = field(default_factory=SourceSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    streams: tuple[StreamSettings, ...] = ()  # several streams (empty: one, from the CLI)


def _non_finite(obj: Any, prefix: str) -> str | None:
    """The dotted name of the first float field holding NaN or an infinity, if any."""
    for f in fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}.{f.name}"
        if is_dataclass(value):
            found = _non_finite(value, key)
            if found:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return key
    return None


def _stream_problems(streams: tuple[StreamSettings, ...]) -> list[tuple[bool, str, str]]:
    """(False, key, why) for each bad entry of ``live.streams``."""
    out, seen = [], set()
    for i, s in enumerate(streams):
        key = f"live.streams[{i}]"
        if s.name and not STREAM_NAME.fullmatch(s.name):
            out.append((False, f"{key}.name", f"{s.name!r}: use letters, digits and _.:- only"))
        if s.name and s.name in seen:
            out.append((False, f"{key}.name", f"{s.name!r} is taken by another stream"))
        seen.add(s.name)
        if s.take is not None and s.take not in TAKE_POLICIES:
            out.append((False, f"{key}.take", f"must be one of {', '.join(TAKE_POLICIES)}"))
        if s.fps is not None and s.fps <= 0:
            out.append((False, f"{key}.fps", "must be > 0"))
        if isinstance(s.source, str) and not s.source:
            out.append((False, f"{key}.source", "must not be empty"))
    return out


def validate_live_config(cfg: LiveConfig) -> None:
    """Impossible values -> ConfigError naming the key."""
    bad = _non_finite(cfg, "live")
    if bad:
        raise ConfigError(f"{bad} must be a finite number (not .nan or .inf)")
    checks = [
        (cfg.source.fps > 0, "live.source.fps", "must be > 0"),
        (cfg.source.demo_size >= 32, "live.source.demo_size", "must be >= 32"),
        (cfg.source.frame_ring >= 1, "live.source.frame_ring", "must be >= 1"),
        (cfg.source.audio_ring_s >= 2, "live.source.audio_ring_s", "must be >= 2 (seconds)"),
        (cfg.source.stream_timeout_s > 0, "live.source.stream_timeout_s", "must be > 0 (seconds)"),
        *((False, f"live.source.reconnect.{key}", why)
          for key, why in cfg.source.reconnect.problems()),
        (cfg.sync.pairing in PAIRING_POLICIES, "live.sync.pairing",
         f"must be one of {', '.join(PAIRING_POLICIES)}, got {cfg.sync.pairing!r}"),
        (cfg.sync.max_lag_ms >= 0, "live.sync.max_lag_ms", "must be >= 0"),
        (cfg.sync.max_wait_ms >= 0, "live.sync.max_wait_ms", "must be >= 0"),
        (cfg.sync.spacing_s > 0, "live.sync.spacing_s", "must be > 0"),
        (cfg.engine.threads >= 1, "live.engine.threads", "must be >= 1"),
        (cfg.engine.device == "cpu" or cfg.engine.device.startswith("cuda"),
         "live.engine.device", "must be cpu, cuda or cuda:N"),
        (cfg.engine.input_size is None or (cfg.engine.input_size >= 64
                                            and cfg.engine.input_size % 32 == 0),
         "live.engine.input_size", "must be a multiple of 32, >= 64 (or null)"),
        (cfg.engine.audio_rate_hz is None or cfg.engine.audio_rate_hz > 0,
         "live.engine.audio_rate_hz", "must be > 0 (or null: every frame)"),
        (cfg.engine.cim_threshold is None or 0.5 < cfg.engine.cim_threshold < 1,
         "live.engine.cim_threshold", "must be in (0.5, 1)"),
        (cfg.engine.precision in ("fp32", "bf16"), "live.engine.precision",
         "must be fp32 or bf16"),
        (cfg.engine.max_consecutive_errors >= 1, "live.engine.max_consecutive_errors",
         "must be >= 1"),
        (cfg.engine.max_batch >= 1, "live.engine.max_batch", "must be >= 1"),
        (cfg.engine.compile in ("off", "on", "auto"), "live.engine.compile",
         "must be off, on or auto"),
        (cfg.engine.batch_buckets is None or (len(cfg.engine.batch_buckets) > 0 and min(
            cfg.engine.batch_buckets) >= 1 and max(cfg.engine.batch_buckets)
            >= cfg.engine.max_batch), "live.engine.batch_buckets",
         "must be sizes >= 1, the largest >= live.engine.max_batch (or null)"),
        (cfg.source.take in TAKE_POLICIES, "live.source.take",
         f"must be one of {', '.join(TAKE_POLICIES)}"),
        *_stream_problems(cfg.streams),
        *((False, f"live.publish.frames.{key}", why) for key, why in option_problems(
            cfg.publish.frames.every, cfg.publish.frames.quality, cfg.publish.frames.max_side)),
        (cfg.publish.encoding in ENCODINGS, "live.publish.encoding",
         f"must be one of {', '.join(ENCODINGS)}"),
        (bool(STREAM_NAME.fullmatch(cfg.publish.stream)), "live.publish.stream",
         "use letters, digits and _.:- only"),
        (0 <= cfg.publish.threshold < 1, "live.publish.threshold", "must be in [0, 1)"),
        (cfg.publish.drop_policy in ("counted", "per_subscriber"), "live.publish.drop_policy",
         "must be counted or per_subscriber"),
        (cfg.publish.sndhwm >= 1, "live.publish.sndhwm", "must be >= 1"),
        (cfg.publish.stats_interval_s > 0, "live.publish.stats_interval_s", "must be > 0"),
        (cfg.publish.heartbeat_s is None or cfg.publish.heartbeat_s > 0,
         "live.publish.heartbeat_s", "must be > 0, or null for no heartbeats"),
        (cfg.publish.heartbeat_timeout_s > (cfg.publish.heartbeat_s or 0),
         "live.publish.heartbeat_timeout_s", "must be > heartbeat_s"),
        (cfg.publish.curve.allowed_clients_dir is None
         or cfg.publish.curve.server_secret_file is not None,
         "live.publish.curve.allowed_clients_dir", "needs live.publish.curve.server_secret_file"),
        (cfg.publish.connect is None or cfg.publish.curve.server_secret_file is None,
         "live.publish.curve.server_secret_file", "is for a bound publisher; with "
         "live.publish.connect use server_key_file (the proxy's) and client_secret_file"),
        (cfg.publish.connect is not None or (cfg.publish.curve.server_key_file is None
                                             and cfg.publish.curve.client_secret_file is None),
         "live.publish.curve.server_key_file", "and client_secret_file need "
         "live.publish.connect (or --zmq-connect)"),
        (cfg.publish.curve.client_secret_file is None
         or cfg.publish.curve.server_key_file is not None,
         "live.publish.curve.client_secret_file", "needs live.publish.curve.server_key_file"),
    ]
    for ok, key, why in checks:
        if not ok:
            value = _value_at(cfg, key)
            shown = "" if value is _MISSING or "got " in why else f" (got {value!r})"
            raise ConfigError(f"{key} {why}{shown}")


_MISSING = object()


def _value_at(cfg: LiveConfig, key: str) -> Any:
    """The setting a dotted ``live.a.b`` key names, or ``_MISSING`` (``live.streams[0]...``)."""
    node: Any = cfg
    for part in key.split(".")[1:]:
        node = getattr(node, part, _MISSING)
        if node is _MISSING:
            break
    return node


def live_config_from_dict(data: Mapping[str, Any]) -> LiveConfig:
    """``{"live": {...}}`` -> LiveConfig (other top-level keys are refused)."""
    extra = [k for k in data if k != "live"]
    if extra:
        raise ConfigError(f"{extra[0]}: unknown top-level key (a live config holds one "
                          "'live:' mapping; the model comes with --weights)")
    live = data.get("live") or {}
    if not isinstance(live, Mapping):
        raise ConfigError(f"live: expected a mapping, got {type(live).__name__}")
    try:
        cfg = from_mapping(LiveConfig, live, "live")
    except ConfigError:
        raise
    except ValueError as e:  # CarryConfig's own checks
        raise ConfigError(f"live.engine.carry: {e}") from None
    validate_live_config(cfg)
    return cfg


def load_live_config(paths: Iterable[str | Path] = (), overrides: Iterable[str] = ()
                     ) -> LiveConfig:
    """Files in order (later keys win), then ``live.a.b=c`` overrides; errors name the file."""
    data: dict[str, Any] = {}
    where = "defaults"
    for path in paths:
        where = str(path)
        part = load_yaml(path)
        try:
            live_config_from_dict(part)  # each file must be valid on its own
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        data = merge(data, part)
    for text in overrides:
        data = merge(data, parse_override(text))
        where = "overrides"
    try:
        return live_config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
