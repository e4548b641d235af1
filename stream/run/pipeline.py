"""The live pipeline: sources -> rings -> pairing -> streaming engine -> publisher and sinks.

Threads (docs/design.md 1-6, CPU path):

* each source captures into its ring (its own thread; never waits on consumers);
* the engine thread takes the newest frame (older unprocessed frames are dropped and counted
  at the ring), pairs it with its log-mel window (by default without waiting: the audio
  already received, its lag in the header), runs :class:`StreamingEngine` and hands the
  result over through a 2-deep queue (drop-oldest, counted);
* the caller's thread (:meth:`LivePipeline.run`) publishes each mask over ZeroMQ and feeds the
  sinks (overlay window, recorder); it also watches the stop conditions.

Stops on ``max_frames`` published, ``duration_s``, the end of a file source, :meth:`stop`,
Ctrl-C / SIGTERM (``KeyboardInterrupt`` in the caller's thread), a source that fails, or
``max_consecutive_errors`` frames in a row that raise in the engine (each distinct cause is
logged once). Every thread is joined and every sink closed within ~2 s.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import Frame, PairedFrame
from stream.buffers.mel_ring import MelRing
from stream.buffers.sync import Pairer, PairingPolicy
from stream.capture.base import _SourceThread
from stream.engine.engine import EngineResult, StreamingEngine
from stream.engine.gpu_pipeline import StreamRunner
from stream.transport.publish import MaskPublisher

logger = logging.getLogger(__name__)


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
    """Publish one engine result as ``mask/<stream>``, its stage times in the header;
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


class LivePipeline:
    """Runs the engine thread and publishes its masks until a stop condition.

    Args:
        frames: the ring the video source fills.
        audio: the ring the audio source fills (None: no audio; the model hears silence).
        sources: the running (started) source threads; stopped and joined at the end.
        engine: the streaming engine.
        publisher: a started publisher.
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
    """

    def __init__(self, *, frames: FrameRing, audio: AudioRing | None,
                 sources: Sequence[_SourceThread], engine: StreamingEngine,
                 publisher: MaskPublisher, threshold: float, model_name: str,
                 av_offset_ms: float = 0.0, pairing: PairingPolicy = PairingPolicy.LATEST,
                 max_lag_ms: float = 40.0, max_wait_ms: float = 50.0,
                 max_frames: int | None = None, duration_s: float | None = None,
                 sinks: Sequence[Sink] = (), max_consecutive_errors: int = 10,
                 clock: Callable[[], int] = time.monotonic_ns,
                 stop_event: threading.Event | None = None) -> None:
        self.frames, self.audio, self.sources = frames, audio, list(sources)
        self.engine, self.publisher, self.sinks = engine, publisher, list(sinks)
        self.threshold, self.model_name = threshold, model_name
        self.max_frames, self.duration_s = max_frames, duration_s
        self.max_consecutive_errors, self.clock = max_consecutive_errors, clock
        self.mel = MelRing(audio) if audio is not None else None
        self.pairer = (Pairer(self.mel, offset_ns=round(av_offset_ms * 1e6),
                              max_wait_s=max_wait_ms / 1e3, clock=clock, policy=pairing,
                              max_lag_s=max_lag_ms / 1e3)
                       if self.mel is not None else None)
        self._handoff: queue.Queue[tuple[PairedFrame, EngineResult, dict[str, int]]] = \
            queue.Queue(maxsize=2)
        self._stop = stop_event or threading.Event()
        self._engine_done = threading.Event()
        self._summary = RunSummary()
        self._fatal: str | None = None
        self._faults = FrameFaults(max_consecutive_errors)
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to end (any thread)."""
        self._stop.set()

    def counters(self) -> dict[str, Any]:
        """Every buffer's and stage's counters, for ``stats/<stream>`` and the summary."""
        s = self._summary
        out: dict[str, Any] = {
            "frame_ring": self.frames.stats(),
            "engine": {**self.engine.stats(), "processed": s.processed,
                       "frame_errors": s.frame_errors, "handoff_dropped": s.handoff_dropped},
            "sources": {src.name: src.stats() for src in self.sources},
        }
        out.update(audio_counters(self.audio, self.mel, self.pairer))
        return out

    # -- engine thread -------------------------------------------------------------------------
    def _inputs_finished(self) -> bool:
        return all(src.finished.is_set() for src in self.sources) and len(self.frames) == 0

    def _engine_loop(self) -> None:
        runner = StreamRunner(self.engine, max_in_flight=2 if self.engine.device.type == "cuda"
                              else 1)
        stage_times: dict[int, dict[str, int]] = {}  # frame index -> dequeue/paired times
        try:
            while not self._stop.is_set():
                frame = self.frames.get_latest(timeout_s=0.05 if not len(runner) else 0.002)
                if frame is None:
                    self._hand_over(runner.poll(), stage_times)
                    if not len(runner) and self._inputs_finished():
                        return
                    continue
                t_dequeue = self.clock()
                paired = (self.pairer.pair(frame) if self.pairer is not None
                          else PairedFrame(frame, None, None, None, audio_late=False))
                stage_times[frame.index] = {"t_dequeue_ns": t_dequeue,
                                            "t_paired_ns": self.clock()}
                try:
                    done = runner.submit(paired)
                    done += runner.poll()
                except Exception as e:  # one bad frame must not end a live run
                    stage_times.pop(frame.index, None)
                    self._summary.frame_errors += 1
                    fatal = self._faults.failed(frame.index, e)
                    if fatal is not None:
                        self._fatal = fatal
                        return
                    continue
                self._faults.ok()
                self._hand_over(done, stage_times)
            self._hand_over(runner.poll(wait=True), stage_times)
        finally:
            self._engine_done.set()

    def _hand_over(self, done: list[tuple[PairedFrame, EngineResult]],
                   stage_times: dict[int, dict[str, int]]) -> None:
        """Queue finished frames for publishing (2 deep; the oldest is dropped, counted)."""
        for paired, result in done:
            self._summary.processed += 1
            item = (paired, result, stage_times.pop(paired.frame.index, {}))
            if put_drop_oldest(self._handoff, item) is not None:
                self._summary.handoff_dropped += 1

    # -- publishing (caller's thread) ----------------------------------------------------------
    def _publish(self, paired: PairedFrame, result: EngineResult, times: dict[str, int]) -> None:
        seq, header = publish_result(self.publisher, paired, result, times, self.threshold,
                                     self.model_name)
        self._summary.published += 1
        if self.sinks:
            header = {"seq": seq, **header, "t_publish_ns": self.clock()}
            for sink in self.sinks:
                sink(paired.frame, result.prob, header)

    def run(self) -> RunSummary:
        """Run until a stop condition; returns the summary. Raises :class:`PipelineError` when
        a source failed or frames kept failing (after cleaning up)."""
        self._thread = threading.Thread(target=self._engine_loop, name="engine", daemon=True)
        self._thread.start()
        t_end = None if self.duration_s is None else self.clock() + round(self.duration_s * 1e9)
        reason = "stopped"
        try:
            while True:
                if self._stop.is_set():
                    reason = "stopped"
                    break
                if t_end is not None and self.clock() >= t_end:
                    reason = "duration reached"
                    break
                if self._source_failed():
                    break
                try:
                    item = self._handoff.get(timeout=0.05)
                except queue.Empty:
                    if self._engine_done.is_set():
                        # a source that failed and then finished also ends the engine: say so
                        if not self._source_failed():
                            reason = "end of input" if self._fatal is None else "engine errors"
                        break
                    continue
                self._publish(*item)
                if self.max_frames is not None and self._summary.published >= self.max_frames:
                    reason = "max frames reached"
                    break
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            self.shutdown()
        self._summary.reason = reason
        self._summary.counters = self.counters()
        if self._fatal is not None:
            self._summary.error = self._fatal
            raise PipelineError(self._fatal)
        return self._summary

    def _source_failed(self) -> bool:
        """Whether a source ended with an error (then it is the run's fatal error)."""
        failed = [s for s in self.sources if s.error is not None]
        if failed and self._fatal is None:
            self._fatal = f"source {failed[0].name} failed: {failed[0].error}"
        return bool(failed)

    def shutdown(self, timeout_s: float = 1.5) -> None:
        """Stop sources and the engine thread, close sinks; bounded by ~timeout_s."""
        self._stop.set()
        for src in self.sources:
            src.stop()
        self.frames.close()
        deadline = time.monotonic() + timeout_s
        for src in self.sources:
            if src.is_alive():
                src.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # closing one sink must not keep the others open
                logger.error("closing %s failed: %s", type(sink).__name__, e)
