"""What every pipeline shares: the sink protocol, the run's summary and errors, publishing one
result, the audio counters, the drop-oldest hand-over and the per-stream fault count."""

from __future__ import annotations

import contextlib
import logging
import queue
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream.buffers.audio_ring import AudioRing
from stream.buffers.frames import Frame, PairedFrame
from stream.buffers.mel_ring import MelRing
from stream.buffers.sync import Pairer
from stream.engine.engine import EngineResult
from stream.transport.publish import MaskPublisher

logger = logging.getLogger("stream.run.pipeline")


class Sink(Protocol):
    """Receives every published mask in the publishing thread; ``close`` ends it."""

    def __call__(self, frame: Frame, prob: np.ndarray, header: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class PipelineError(RuntimeError):
    """The run had to stop: a source failed or frames kept failing; one line for the user."""


@dataclass
class RunSummary:
    """What a run did: counts, why it stopped, the last error (if it was fatal)."""

    published: int = 0
    processed: int = 0
    frame_errors: int = 0
    handoff_dropped: int = 0
    reason: str = ""
    error: str | None = None
    counters: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # several streams: name -> why


def publish_result(publisher: MaskPublisher, paired: PairedFrame, result: EngineResult,
                   times: dict[str, int], threshold: float, model_name: str,
                   stream: str | None = None) -> tuple[int, dict[str, Any]]:
    """Publish one engine result as ``mask/<stream>``, its stage times in the header, then
    (when the publisher has frames on) its frame as ``frame/<stream>`` under the same seq;
    -> (seq, the header's fields for sinks, without seq and t_publish_ns)."""
    frame = paired.frame
    t_cap = frame.t_capture_ns
    audio_start = paired.t_audio_start_ns if paired.t_audio_start_ns is not None else t_cap
    audio_end = paired.t_audio_end_ns if paired.t_audio_end_ns is not None else t_cap
    stages = {**times, **{f"t_{k}_ns": v for k, v in result.times_ns.items()}}
    extra: dict[str, Any] = {**stages, "window": result.window,
                             "audio": "none" if paired.logmel is None else "paired"}
    seq = publisher.publish(result.prob, frame.index, t_cap, audio_start, audio_end,
                            result.keep_ratio, threshold, model_name,
                            audio_late=paired.audio_late,
                            audio_lag_ms=paired.audio_lag_ns / 1e6, extra=extra, stream=stream)
    publisher.publish_frame(frame.image, seq, frame.index, t_cap, stream=stream)  # if frames on
    header = {"frame_index": frame.index, "t_capture_ns": t_cap,
              "t_audio_start_ns": audio_start, "t_audio_end_ns": audio_end,
              "keep_ratio": result.keep_ratio, "audio_late": paired.audio_late,
              "audio_lag_ms": paired.audio_lag_ns / 1e6, **extra}
    return seq, header


def audio_counters(audio: AudioRing | None, mel: MelRing | None, pairer: Pairer | None
                   ) -> dict[str, Any]:
    """The audio path's counters for ``stats/<stream>`` (empty for a stream without audio)."""
    if audio is None or mel is None or pairer is None:
        return {}
    return {"audio_ring": audio.stats(), "mel_ring": mel.stats(), "pairing": pairer.stats()}


def put_drop_oldest(q: queue.Queue[Any], item: Any) -> Any | None:
    """Put ``item`` without waiting; when ``q`` is full its oldest item makes room. -> the
    item dropped (None: none was)."""
    dropped = None
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                dropped = q.get_nowait()


class FrameFaults:
    """One stream's frames that raised in the engine: each distinct cause is logged once (with
    ``label`` in front), and ``limit`` failures in a row end the stream."""

    def __init__(self, limit: int, label: str = "") -> None:
        self.limit, self.label, self.in_a_row = limit, label, 0
        self._causes: set[str] = set()

    def ok(self) -> None:
        """A frame went through: the run of failures is broken."""
        self.in_a_row = 0

    def failed(self, frame_index: int, e: Exception) -> str | None:
        """Count one failed frame; -> why the stream must stop, or None while it may go on."""
        self.in_a_row += 1
        cause = f"{type(e).__name__}: {e}"
        if cause not in self._causes:
            self._causes.add(cause)
            logger.error("%sframe %d dropped: %s", self.label, frame_index, cause)
        if self.in_a_row >= self.limit:
            return f"{self.in_a_row} frames in a row failed in the engine; last cause: {cause}"
        return None
