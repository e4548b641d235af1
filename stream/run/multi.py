"""Several streams in one process (docs/design.md 5, "Many streams"): N sources, one batched engine,
one publisher socket.

Each stream is a :class:`Lane`: its rings, sources, log-mel ring and pairer, its engine state
(cache, CIM carry, audio reuse), its counters and its fate. Threads:

* each source captures into its own rings (never waits on consumers);
* the engine thread asks :class:`RoundRobin` for the newest frame of every stream that has
  one (at most ``max_batch``, starting after the stream served last, so no stream starves),
  pairs each with its audio, runs one :meth:`BatchedEngine.step` for all of them and hands the
  results over (a queue of ``2 * max_batch``; drop-oldest, counted per stream);
* the caller's thread (:meth:`MultiPipeline.run`) publishes ``mask/<name>`` on the shared
  socket and watches the stop conditions.

Drops when the engine is saturated happen in each stream's own frame ring (``take: newest``
reads the newest frame and counts the older ones dropped), so they spread across streams and
are counted per stream. Faults stay in their stream: a source that fails, or frames of one
stream that keep failing (a failing batch is retried frame by frame to find whose frame it
was), end that stream (``state: failed`` and the cause in its ``stats/<name>``); the others go
on. The run ends when every stream has ended (files at their end, ``max_frames`` masks each),
on ``duration_s``, :meth:`stop` or Ctrl-C; it raises :class:`PipelineError` only when every
stream failed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import Frame, PairedFrame
from stream.buffers.mel_ring import MelRing
from stream.buffers.sync import Pairer, PairingPolicy
from stream.capture.base import _SourceThread
from stream.engine.batch import BatchedEngine, StreamState
from stream.engine.engine import EngineResult
from stream.run.results import (
    FrameFaults,
    PipelineError,
    RunSummary,
    Sink,
    audio_counters,
    publish_result,
    put_drop_oldest,
)
from stream.transport.publish import MaskPublisher

logger = logging.getLogger(__name__)

RATE_WINDOW_NS = 5_000_000_000  # fps_in / fps_out: over (about) the last 5 s
LATENCY_HISTORY = 256           # latency_ms: over the last 256 masks


class Lane:
    """One stream of a multi-stream run.

    Args:
        name: the stream's name (``mask/<name>``).
        frames, audio: its rings (audio None: the model hears silence).
        sources: its started capture threads.
        state: its engine state (``BatchedEngine.new_stream()``).
        av_offset_ms, pairing, max_lag_ms, max_wait_ms: its pairing (see ``Pairer``).
        take: "newest" (keep-latest read; older frames dropped and counted) or "all" (every
            frame in order).
        clock: the pipeline clock.
    """

    def __init__(self, name: str, frames: FrameRing, audio: AudioRing | None,
                 sources: Sequence[_SourceThread], state: StreamState, *,
                 av_offset_ms: float = 0.0, pairing: PairingPolicy = PairingPolicy.LATEST,
                 max_lag_ms: float = 40.0, max_wait_ms: float = 50.0, take: str = "newest",
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        if take not in ("newest", "all"):
            raise ValueError(f"take must be 'newest' or 'all', got {take!r}")
        self.name, self.frames, self.audio, self.sources = name, frames, audio, list(sources)
        self.state, self.take, self.clock = state, take, clock
        self.mel = MelRing(audio) if audio is not None else None
        self.pairer = (Pairer(self.mel, offset_ns=round(av_offset_ms * 1e6),
                              max_wait_s=max_wait_ms / 1e3, clock=clock, policy=pairing,
                              max_lag_s=max_lag_ms / 1e3)
                       if self.mel is not None else None)
        self.status = "running"                    # running | done | failed
        self.reached_max_frames = False
        self.error: str | None = None
        self.processed = self.published = self.frame_errors = self.handoff_dropped = 0
        # frames failing in the engine; the pipeline sets its own limit
        self.faults = FrameFaults(10, f"stream {name}: ")
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_HISTORY)  # capture -> published
        self._rates: deque[tuple[int, int, int]] = deque([(clock(), 0, 0)])
        self._lock = threading.Lock()

    def next_frame(self) -> Frame | None:
        """The frame to process now, without waiting (None: none buffered)."""
        return self.frames.get_latest(0) if self.take == "newest" else self.frames.get(0)

    def pair(self, frame: Frame) -> PairedFrame:
        if self.pairer is None:
            return PairedFrame(frame, None, None, None, audio_late=False)
        return self.pairer.pair(frame)

    def check_sources(self) -> None:
        """End the lane when a source failed, or when its input ended and was processed."""
        failed = [s for s in self.sources if s.error is not None]
        if failed:
            self.end("failed", f"source {failed[0].name} failed: {failed[0].error}")
        elif all(s.finished.is_set() for s in self.sources) and len(self.frames) == 0:
            self.end("done")

    def end(self, status: str, error: str | None = None) -> bool:
        """Stop this stream (its sources; its ring takes no more); False if it had ended."""
        with self._lock:
            if self.status != "running":
                return False
            self.status, self.error = status, error
        for src in self.sources:
            src.stop()
        self.frames.close()
        if error:
            logger.error("stream %s stopped: %s (the other streams go on)", self.name, error)
        return True

    def counters(self) -> dict[str, Any]:
        """This stream's counters for ``stats/<name>``: state, buffers, engine, sources, and
        its perf figures: fps_in (frames captured), fps_out (masks published) over about the
        last 5 s, latency_ms (capture -> published) p50/p99 of its last 256 masks."""
        now, written, published = self.clock(), self.frames.stats()["written"], self.published
        self._rates.append((now, written, published))
        while len(self._rates) > 2 and now - self._rates[1][0] >= RATE_WINDOW_NS:
            self._rates.popleft()
        t0, w0, p0 = self._rates[0]
        span = (now - t0) / 1e9
        lat = np.asarray(self.latency_ms, dtype=np.float64)
        out: dict[str, Any] = {
            "state": self.status, "error": self.error,
            "fps_in": (written - w0) / span if span > 0 else 0.0,
            "fps_out": (published - p0) / span if span > 0 else 0.0,
            "latency_ms": {"p50": float(np.percentile(lat, 50)) if lat.size else None,
                           "p99": float(np.percentile(lat, 99)) if lat.size else None,
                           "masks": int(lat.size)},
            "frame_ring": self.frames.stats(),
            "engine": {**self.state.stats(), "processed": self.processed,
                       "published": self.published, "frame_errors": self.frame_errors,
                       "handoff_dropped": self.handoff_dropped},
            "sources": {src.name: src.stats() for src in self.sources},
        }
        out.update(audio_counters(self.audio, self.mel, self.pairer))
        return out


class RoundRobin:
    """Picks the streams a step serves: at most ``max_batch``, each with its next frame,
    starting after the stream served last, so with more ready streams than ``max_batch`` every
    stream is served within ceil(ready / max_batch) steps."""

    def __init__(self, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch, self._next = max_batch, 0

    def pick(self, lanes: Sequence[Lane]) -> list[tuple[Lane, Frame]]:
        out: list[tuple[Lane, Frame]] = []
        last = -1
        for k in range(len(lanes)):
            i = (self._next + k) % len(lanes)
            lane = lanes[i]
            if lane.status != "running":
                continue
            frame = lane.next_frame()
            if frame is None:
                continue
            out.append((lane, frame))
            last = i
            if len(out) == self.max_batch:
                break
        if out:
            self._next = (last + 1) % len(lanes)
        return out


Done = tuple[Lane, PairedFrame, EngineResult, dict[str, int]]


class MultiPipeline:
    """Runs the batched engine thread over N lanes and publishes until a stop condition.

    Args:
        lanes: the streams (names unique; each lane's ``state`` from ``engine``).
        engine: the batched engine.
        publisher: a started publisher with every lane's stream added.
        threshold, model_name: header fields.
        max_batch: most frames per step.
        max_frames: per stream: it ends after this many masks.
        duration_s: the run stops after this long.
        max_consecutive_errors: a stream's frames failing in a row that end the stream.
        clock: the pipeline clock.
        stop_event: set from anywhere to end the run.
        sinks: get every published mask in the publishing thread (overlay, recorder).
    """

    def __init__(self, *, lanes: Sequence[Lane], engine: BatchedEngine,
                 publisher: MaskPublisher, threshold: float, model_name: str,
                 max_batch: int = 8, max_frames: int | None = None,
                 duration_s: float | None = None, max_consecutive_errors: int = 10,
                 clock: Callable[[], int] = time.monotonic_ns,
                 stop_event: threading.Event | None = None, sinks: Sequence[Sink] = ()
                 ) -> None:
        names = [lane.name for lane in lanes]
        if not lanes or len(set(names)) != len(names):
            raise ValueError(f"need one or more lanes with distinct names, got {names}")
        self.lanes, self.engine, self.publisher = list(lanes), engine, publisher
        self.sinks = list(sinks)
        self.threshold, self.model_name = threshold, model_name
        self.scheduler = RoundRobin(max_batch)
        self.max_frames, self.duration_s = max_frames, duration_s
        self.max_consecutive_errors, self.clock = max_consecutive_errors, clock
        self._work = threading.Event()  # set by every lane's frame ring on put
        for lane in self.lanes:
            lane.frames.notify(self._work)
            lane.faults = FrameFaults(max_consecutive_errors, f"stream {lane.name}: ")
        self._handoff: queue.Queue[Done] = queue.Queue(maxsize=2 * max_batch)
        self._stop = stop_event or threading.Event()
        self._engine_done = threading.Event()
        self._thread: threading.Thread | None = None
        self.summary = RunSummary()

    def stop(self) -> None:
        self._stop.set()

    def lane(self, name: str) -> Lane:
        return next(lane for lane in self.lanes if lane.name == name)

    def counters(self) -> dict[str, Any]:
        """Every stream's counters, by name, plus the batching figures."""
        e = self.engine
        return {"streams": {lane.name: lane.counters() for lane in self.lanes},
                "batch": {"steps": e.steps, "rows": e.rows, "padded_rows": e.padded_rows,
                          "mean_size": e.rows / e.steps if e.steps else 0.0}}

    # -- engine thread -------------------------------------------------------------------------
    def step_once(self) -> list[Done]:
        """One scheduling pass and one batched step (the engine thread's body; tests call it
        directly): -> the frames finished, in batch order."""
        picked = self.scheduler.pick(self.lanes)
        if not picked:
            return []
        items, times = [], []
        for lane, frame in picked:
            t_dequeue = self.clock()
            paired = lane.pair(frame)
            items.append((lane, paired))
            times.append({"t_dequeue_ns": t_dequeue, "t_paired_ns": self.clock()})
        try:
            results = self._step([(lane.state, p) for lane, p in items])
        except Exception as e:
            if len(items) == 1:
                self._frame_failed(items[0][0], items[0][1], e)
                return []
            done = []   # whose frame was it? Each alone; the others' frames still go through
            for (lane, paired), t in zip(items, times, strict=True):
                try:
                    (result,) = self._step([(lane.state, paired)])
                except Exception as e_one:
                    self._frame_failed(lane, paired, e_one)
                    continue
                lane.faults.ok()
                done.append((lane, paired, result, t))
            return done
        for lane, _ in items:
            lane.faults.ok()
        return [(lane, p, r, t) for (lane, p), r, t in zip(items, results, times, strict=True)]

    def _step(self, items: list[tuple[StreamState, PairedFrame]]) -> list[EngineResult]:
        """One engine step (a step that raises changes no stream's state)."""
        return self.engine.step(items)

    def _frame_failed(self, lane: Lane, paired: PairedFrame, e: Exception) -> None:
        lane.frame_errors += 1
        fatal = lane.faults.failed(paired.frame.index, e)
        if fatal is not None:
            lane.end("failed", fatal)

    def _engine_loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._work.clear()  # before looking: a frame put after this sets it again
                done = self.step_once()
                for lane in self.lanes:
                    if lane.status == "running" and not self._stop.is_set():
                        lane.check_sources()
                if done:
                    self._hand_over(done)
                    continue
                if all(lane.status != "running" for lane in self.lanes):
                    return
                self._work.wait(0.05)
        finally:
            self._engine_done.set()

    def _hand_over(self, done: list[Done]) -> None:
        for item in done:
            item[0].processed += 1
            dropped = put_drop_oldest(self._handoff, item)
            if dropped is not None:
                dropped[0].handoff_dropped += 1

    # -- publishing (caller's thread) ----------------------------------------------------------
    def publish(self, item: Done) -> None:
        lane, paired, result, times = item
        if self.max_frames is not None and lane.published >= self.max_frames:
            return
        seq, header = publish_result(self.publisher, paired, result, times, self.threshold,
                                     self.model_name, stream=lane.name)
        lane.published += 1
        if self.sinks:
            header = {"seq": seq, **header, "t_publish_ns": self.clock()}
            for sink in self.sinks:
                sink(paired.frame, result.prob, header)
        lane.latency_ms.append((self.clock() - paired.frame.t_capture_ns) / 1e6)
        if self.max_frames is not None and lane.published >= self.max_frames:
            lane.end("done")
            lane.reached_max_frames = True

    def run(self) -> RunSummary:
        """Run until a stop condition; -> the summary (``counters`` by stream, ``failed``).
        Raises :class:`PipelineError` when every stream failed (after cleaning up)."""
        self._thread = threading.Thread(target=self._engine_loop, name="engine", daemon=True)
        self._thread.start()
        t_end = None if self.duration_s is None else self.clock() + round(self.duration_s * 1e9)
        reason = "stopped"
        try:
            while not self._stop.is_set():
                if t_end is not None and self.clock() >= t_end:
                    reason = "duration reached"
                    break
                try:
                    item = self._handoff.get(timeout=0.05)
                except queue.Empty:
                    if self._engine_done.is_set():
                        reason = "end of input"
                        break
                    continue
                self.publish(item)
                if self.max_frames is not None and all(lane.reached_max_frames
                                                       for lane in self.lanes):
                    reason = "max frames reached"
                    break
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            self.shutdown()
        failed = {lane.name: lane.error or "" for lane in self.lanes if lane.status == "failed"}
        self.summary = RunSummary(
            published=sum(lane.published for lane in self.lanes),
            processed=sum(lane.processed for lane in self.lanes),
            frame_errors=sum(lane.frame_errors for lane in self.lanes),
            handoff_dropped=sum(lane.handoff_dropped for lane in self.lanes),
            reason=reason, counters=self.counters(), failed=failed)
        if reason == "end of input" and len(failed) == len(self.lanes):
            self.summary.error = self._all_failed(failed)
            raise PipelineError(self.summary.error)
        return self.summary

    def _all_failed(self, failed: dict[str, str]) -> str:
        """The run's error when every stream failed (one line)."""
        return "every stream failed: " + "; ".join(f"{n}: {why}" for n, why in failed.items())

    def shutdown(self, timeout_s: float = 1.5) -> None:
        """Stop every source and the engine thread; bounded by ~timeout_s."""
        self._stop.set()
        for lane in self.lanes:
            for src in lane.sources:
                src.stop()
            lane.frames.close()
        deadline = time.monotonic() + timeout_s
        for lane in self.lanes:
            for src in lane.sources:
                if src.is_alive():
                    src.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # closing one sink must not keep the others open
                logger.error("closing %s failed: %s", type(sink).__name__, e)
        self.sinks = []
