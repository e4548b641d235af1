"""The live pipeline for one stream: sources -> rings -> pairing -> engine -> publisher, sinks.

It is the multi-stream pipeline (:class:`~stream.run.multi.MultiPipeline`) with one lane, so
one stream and many run the same threads, the same scheduling, fault handling and counters
(docs/design.md 1-6):

* each source captures into its ring (its own thread; never waits on consumers);
* the engine thread takes the stream's newest frame (``take: newest``; older unprocessed
  frames are dropped and counted at the ring) or every frame in order (``take: all``), pairs
  it with its log-mel window (by default without waiting: the audio already received, its lag
  in the header), runs the engine and hands the result over through a 2-deep queue
  (drop-oldest, counted);
* the caller's thread (:meth:`LivePipeline.run`) publishes each mask over ZeroMQ and feeds the
  sinks (overlay window, recorder); it also watches the stop conditions.

Stops on ``max_frames`` published, ``duration_s``, the end of a file source, :meth:`stop`,
Ctrl-C / SIGTERM (``KeyboardInterrupt`` in the caller's thread), a source that fails, or
``max_consecutive_errors`` frames in a row that raise in the engine (each distinct cause is
logged once); the last two raise :class:`PipelineError` with the cause. Every thread is joined
and every sink closed within ~2 s. The engine is a :class:`StreamingEngine` (its batched
streaming path, or clip mode for comparison).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import PairedFrame
from stream.buffers.sync import Pairer, PairingPolicy
from stream.capture.base import _SourceThread
from stream.engine.batch import StreamState
from stream.engine.engine import EngineResult, StreamingEngine
from stream.run.multi import Lane, MultiPipeline
from stream.run.results import (  # noqa: F401  (re-exported: the pipeline's public names)
    FrameFaults,
    PipelineError,
    RunSummary,
    Sink,
    audio_counters,
    publish_result,
    put_drop_oldest,
)
from stream.transport.publish import MaskPublisher


class LivePipeline(MultiPipeline):
    """One stream through :class:`MultiPipeline`; publishes its masks until a stop condition.

    Args:
        frames: the ring the video source fills.
        audio: the ring the audio source fills (None: no audio; the model hears silence).
        sources: the running (started) source threads; stopped and joined at the end.
        engine: the streaming engine.
        publisher: a started publisher (the stream is its ``stream``).
        threshold: mask threshold written into headers (binary encodings).
        model_name: the header's ``model``.
        av_offset_ms, pairing, max_lag_ms, max_wait_ms: pairing (docs/design.md 4; see
            :class:`~stream.buffers.sync.Pairer`): ``latest`` never waits and accepts a window
            ending up to ``max_lag_ms`` early; ``exact`` waits up to ``max_wait_ms``.
        max_frames: stop after this many masks published.
        duration_s: stop after this long.
        sinks: overlay, recorder...
        max_consecutive_errors: frames failing in a row that stop the run.
        clock: the pipeline clock.
        stop_event: set from anywhere to end the run (default: a new one; see :meth:`stop`).
        take: "newest" (keep-latest) or "all" (every frame in order).
    """

    def __init__(self, *, frames: FrameRing, audio: AudioRing | None,
                 sources: Sequence[_SourceThread], engine: StreamingEngine,
                 publisher: MaskPublisher, threshold: float, model_name: str,
                 av_offset_ms: float = 0.0, pairing: PairingPolicy = PairingPolicy.LATEST,
                 max_lag_ms: float = 40.0, max_wait_ms: float = 50.0,
                 max_frames: int | None = None, duration_s: float | None = None,
                 sinks: Sequence[Sink] = (), max_consecutive_errors: int = 10,
                 clock: Callable[[], int] = time.monotonic_ns,
                 stop_event: threading.Event | None = None, take: str = "newest") -> None:
        lane = Lane(publisher.stream if publisher is not None else "stream", frames, audio,
                    sources, engine.state if engine is not None else None,  # type: ignore[arg-type]
                    av_offset_ms=av_offset_ms, pairing=pairing, max_lag_ms=max_lag_ms,
                    max_wait_ms=max_wait_ms, take=take, clock=clock)
        super().__init__(lanes=[lane], engine=engine, publisher=publisher,  # type: ignore[arg-type]
                         threshold=threshold, model_name=model_name, max_batch=1,
                         max_frames=max_frames, duration_s=duration_s,
                         max_consecutive_errors=max_consecutive_errors, clock=clock,
                         stop_event=stop_event, sinks=sinks)
        self.single = engine
        self.the_lane.faults = FrameFaults(max_consecutive_errors)  # one stream: no label

    @property
    def the_lane(self) -> Lane:
        return self.lanes[0]

    @property
    def frames(self) -> FrameRing:
        return self.the_lane.frames

    @property
    def pairer(self) -> Pairer | None:
        return self.the_lane.pairer

    @property
    def _summary(self) -> RunSummary:
        return self.summary

    def _step(self, items: list[tuple[StreamState, PairedFrame]]) -> list[EngineResult]:
        """The stream's engine (its streaming path, or clip mode)."""
        ((_state, paired),) = items
        return [self.single.step(paired)]

    def counters(self) -> dict[str, Any]:
        """The stream's counters (``stats/<stream>`` and the summary): state, FPS, latency,
        every buffer's and stage's counters."""
        out = self.the_lane.counters()
        out["engine"] = {**out["engine"], **self.single.stats()}
        return out

    def _all_failed(self, failed: dict[str, str]) -> str:
        return self.the_lane.error or "the stream failed"
