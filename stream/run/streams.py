"""Which streams a run has, and their sources: ``--camera`` / ``--video`` / ``--demo`` or
``live.streams`` -> :class:`StreamSpec` list (:func:`resolve_streams`); one spec -> running
capture threads (:func:`open_sources`).

One source on the command line and no ``live.streams`` is the single-stream run of before
(named by ``--stream``, default ``cam0``). Several sources (repeated ``--camera`` / ``--video``,
named ``cam0``, ``cam1``, ... in command-line order, or by one ``--stream`` each) or any
``live.streams`` entry make a multi-stream run (:mod:`stream.run.multi`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.capture.camera import CameraSource
from stream.capture.demo import DemoSource
from stream.capture.media_file import MediaFileSource
from stream.run.config import LiveConfig, StreamSettings

logger = logging.getLogger("run_live")


class UserError(Exception):
    """A mistake in the command line or the environment: one line, exit 2."""


@dataclass(frozen=True)
class StreamSpec:
    """One stream, resolved.

    name: topic ``mask/<name>``.
    kind: "demo", "video" (a media file with its audio) or "camera" (index, file or URL).
    target: demo: the scene seed; video: the path; camera: the index or URL, as given.
    mic: the camera's microphone (None: silence).
    av_offset_ms, fps, realtime, take: this stream's settings (live.sync / live.source unless
        the stream overrides them).
    """

    name: str
    kind: str
    target: str | int
    mic: str | None = None
    av_offset_ms: float = 0.0
    fps: float = 30.0
    realtime: bool = True
    take: str = "newest"

    def describe(self) -> dict[str, Any]:
        """For --dry-run, the recorder's meta.json and logs."""
        if self.kind == "video":
            return {"kind": "video", "path": self.target}
        if self.kind == "camera":
            return {"kind": "camera", "device": self.target, "mic": self.mic}
        return {"kind": "demo", "seed": self.target}


def parse_source(source: str | int, demo_seed: int) -> tuple[str, str | int]:
    """A ``live.streams`` source -> (kind, target): ``demo`` / ``demo:SEED``, a camera index
    (int or digits), a URL (``scheme://``: a network camera), else a media file."""
    if isinstance(source, int):
        return "camera", str(source)
    text = source.strip()
    if text == "demo":
        return "demo", demo_seed
    if text.startswith("demo:"):
        try:
            return "demo", int(text[5:])
        except ValueError:
            raise UserError(f"source {source!r}: a demo seed is an integer, e.g. demo:3") \
                from None
    if text.isdigit() or "://" in text:
        return "camera", text
    return "video", text


def _spec(name: str, kind: str, target: str | int, mic: str | None, cfg: LiveConfig,
          over: StreamSettings | None = None) -> StreamSpec:
    o = over or StreamSettings()
    return StreamSpec(
        name, kind, target, mic,
        av_offset_ms=cfg.sync.av_offset_ms if o.av_offset_ms is None else o.av_offset_ms,
        fps=cfg.source.fps if o.fps is None else o.fps,
        realtime=cfg.source.realtime if o.realtime is None else o.realtime,
        take=cfg.source.take if o.take is None else o.take)


def resolve_streams(args: argparse.Namespace, cfg: LiveConfig) -> list[StreamSpec]:
    """The run's streams from the command line (``args.sources``: (kind, value) in order) or
    ``cfg.streams``; mistakes raise :class:`UserError` (one line)."""
    cli: list[tuple[str, str | None]] = list(getattr(args, "sources", None) or [])
    names: list[str] = list(args.stream or [])
    if args.demo:
        if cli:
            raise UserError("--demo plays the embedded scene alone: drop --camera / --video")
        cli = [("demo", None)]
    if cli and cfg.streams:
        raise UserError("sources on the command line and in live.streams: give one or the other")
    if cfg.streams:
        if names:
            raise UserError("--stream names a command-line source; name live.streams entries "
                            "with name:")
        if args.mic:
            raise UserError("--mic goes with --camera; give live.streams entries a mic:")
        specs = []
        for i, s in enumerate(cfg.streams):
            kind, target = parse_source(s.source, cfg.source.demo_seed)
            if s.mic is not None and kind != "camera":
                raise UserError(f"live.streams[{i}].mic goes with a camera source "
                                f"({kind} brings its own audio)")
            mic = None if s.mic is None else str(s.mic)
            specs.append(_spec(s.name or f"cam{i}", kind, target, mic, cfg, s))
        _check_names(specs)
        return specs
    cli = cli or [("demo", None)]
    cameras = [v for k, v in cli if k == "camera"]
    if args.mic and not cameras:
        raise UserError("--mic goes with --camera (--video and --demo bring their own audio)")
    if args.mic and len(cameras) > 1:
        raise UserError(f"--mic with {len(cameras)} cameras is ambiguous: give each camera "
                        "its microphone in live.streams (mic:)")
    if len(cli) == 1:
        names = names or [cfg.publish.stream]
    elif not names:
        names = [f"cam{i}" for i in range(len(cli))]
    if len(names) != len(cli):
        raise UserError(f"{len(names)} --stream names for {len(cli)} sources: one name "
                        "per source, in order, or none")
    specs = []
    for name, (kind, value) in zip(names, cli, strict=True):
        specs.append(_spec(name, kind, cfg.source.demo_seed if value is None else value,
                           args.mic if kind == "camera" else None, cfg))
    _check_names(specs)
    return specs


def _check_names(specs: list[StreamSpec]) -> None:
    from stream.transport.messages import STREAM_NAME

    seen: set[str] = set()
    for s in specs:
        if not STREAM_NAME.fullmatch(s.name):
            raise UserError(f"stream name {s.name!r}: use letters, digits and _.:- only")
        if s.name in seen:
            raise UserError(f"two streams are named {s.name!r}: stream names must differ")
        seen.add(s.name)


def check_media_files(specs: list[StreamSpec]) -> None:
    """Every media-file stream names an existing file (checked before anything starts, and by
    ``--dry-run``); else :class:`UserError`."""
    for s in specs:
        if s.kind == "video" and not Path(str(s.target)).is_file():
            raise UserError(f"media file {s.target} not found; give the path of a video file")


def open_sources(spec: StreamSpec, cfg: LiveConfig, frames: FrameRing, audio: AudioRing
                 ) -> tuple[list[Any], AudioRing | None]:
    """Start one stream's capture threads; -> (sources, the audio ring or None without
    audio). Raises :class:`~stream.capture.base.SourceError` when the input cannot open."""
    s = cfg.source
    sources: list[Any] = []
    try:
        if spec.kind == "video":
            media = MediaFileSource(str(spec.target), frames, audio, realtime=spec.realtime)
            media.start()
            sources.append(media)
            if not media.has_audio:
                logger.warning("%s has no audio track: the model hears silence", spec.target)
                return sources, None
            return sources, audio
        if spec.kind == "camera":
            cam = CameraSource(spec.target, frames, fps_hint=spec.fps,
                               stream_timeout_s=s.stream_timeout_s, reconnect=s.reconnect)
            if spec.mic:
                from stream.capture.mic import MicSource

                mic = MicSource(spec.mic, audio)
                mic.start()
                sources.append(mic)
            cam.start()
            sources.append(cam)
            if not spec.mic:
                logger.warning("%s: no --mic: the model hears silence (add --mic default)",
                               spec.name)
                return sources, None
            return sources, audio
        demo = DemoSource(frames, audio, fps=spec.fps, size=s.demo_size, seed=int(spec.target),
                          realtime=spec.realtime)
        demo.start()
        sources.append(demo)
        return sources, audio
    except BaseException:
        for src in sources:
            src.stop()
        raise

