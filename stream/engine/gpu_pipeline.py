"""Pipelined submission of frames to the streaming engine: copy-in | compute | copy-out.

On CUDA (docs/design.md 5) three streams overlap consecutive frames:

* copy-in: the frame (uint8 BGR) and its log-mel window are copied by the CPU into the frame's
  pinned host slot (:mod:`stream.engine.staging`), then to the device with ``non_blocking``
  copies; an event marks them done;
* compute: waits on that event, preprocesses on the GPU (CuPy kernel or torch ops) and runs the
  step (with ``cuda_graphs``: one graph replay for the bucket, :mod:`stream.engine.cuda_graphs`;
  no host synchronisation either way); an event marks the mask ready;
* copy-out: waits on it and copies the mask and keep ratio into the slot's pinned buffers; the
  slot's event marks the frame finished.

At most ``max_in_flight`` (2) frames are in flight: :meth:`StreamRunner.submit` first retires
the oldest when the ring is full (waiting on its event, never ``torch.cuda.synchronize()``).
:meth:`StreamRunner.poll` returns finished frames in order without waiting.

On the CPU the same code runs with the stages in sequence (no streams, no events), so the slot
ring, ordering, results and in-flight bound are exercised by the CPU tests. With
``timeline=True`` each frame's stage intervals are recorded (CUDA timing events on a GPU,
``perf_counter`` on the CPU) for :mod:`stream.engine.timeline`'s overlap figures.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stream.buffers.frames import PairedFrame
from stream.engine.engine import EngineResult, StreamingEngine
from stream.engine.staging import HostRing, HostSlot
from stream.engine.timeline import STAGES, FrameSpan


@dataclass
class _Frame:
    """One frame in flight: its host slot, result so far and stage marks."""

    slot: HostSlot
    paired: PairedFrame
    result: EngineResult
    marks: list[Any] = field(default_factory=list)   # 6 marks: start/end of each stage


class StreamRunner:
    """Feeds :class:`StreamingEngine` with up to ``max_in_flight`` frames in flight.

    Args:
        engine: the streaming engine (its device decides CUDA or CPU).
        max_in_flight: frames submitted but not yet returned by :meth:`poll` (>= 1).
        timeline: record each frame's stage intervals (:meth:`timeline`).
    """

    def __init__(self, engine: StreamingEngine, max_in_flight: int = 2,
                 timeline: bool = False) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.engine, self.max_in_flight, self.record_timeline = engine, max_in_flight, timeline
        self.cuda = engine.device.type == "cuda"
        self.host = HostRing(max_in_flight, pinned=self.cuda)
        self._inflight: deque[_Frame] = deque()
        self._spans: list[FrameSpan] = []
        self._origin: Any = None                          # first mark (time zero)
        self.submitted = self.completed = self.max_seen_in_flight = 0
        self.copy_in: Any = None
        self.compute: Any = None
        self.copy_out: Any = None
        if self.cuda:
            dev = engine.device
            self.copy_in = torch.cuda.Stream(dev)
            self.compute = torch.cuda.Stream(dev)
            self.copy_out = torch.cuda.Stream(dev)

    def __len__(self) -> int:
        return len(self._inflight)

    def submit(self, paired: PairedFrame) -> list[tuple[PairedFrame, EngineResult]]:
        """Start one frame; returns frames that had to be retired first (ring full), in order."""
        retired = []
        if len(self._inflight) >= self.max_in_flight:
            retired.append(self._retire(self._inflight.popleft()))
        frame = self._start(self.host.acquire(), paired)
        self._inflight.append(frame)
        self.submitted += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, len(self._inflight))
        return retired

    def poll(self, wait: bool = False) -> list[tuple[PairedFrame, EngineResult]]:
        """Finished frames, oldest first; ``wait``: retire every frame in flight."""
        out = []
        while self._inflight and (wait or self._inflight[0].slot.ready()):
            out.append(self._retire(self._inflight.popleft()))
        return out

    def timeline(self) -> list[FrameSpan]:
        """Stage intervals (ms from the first frame's copy-in) of the retired frames, in order
        (``timeline=True``)."""
        return list(self._spans)

    # -- internals ---------------------------------------------------------------------------
    def _on(self, stream: Any) -> Any:
        return torch.cuda.stream(stream) if self.cuda else contextlib.nullcontext()

    def _mark(self, frame: _Frame, stream: Any) -> None:
        if not self.record_timeline:
            return
        ev: Any = time.perf_counter_ns()
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record(stream)
        if self._origin is None:
            self._origin = ev
        frame.marks.append(ev)

    def _handoff(self, done_on: Any, next_on: Any) -> None:
        """``next_on`` waits for what ``done_on`` has enqueued (an event; CPU: nothing)."""
        if self.cuda:
            ev = torch.cuda.Event()
            ev.record(done_on)
            next_on.wait_event(ev)

    def _start(self, slot: HostSlot, paired: PairedFrame) -> _Frame:
        eng, dev = self.engine, self.engine.device
        frame = _Frame(slot, paired, EngineResult(np.empty(0, np.float32), torch.empty(0), 0.0,
                                                  []))
        # -- copy-in: host -> pinned slot (CPU copies), then -> device (DMA) ----------------
        host_image = slot.stage("image", paired.frame.image, dev)          # (H, W, 3) uint8
        host_mel = None
        if paired.logmel is not None:
            host_mel = slot.stage("mel", np.asarray(paired.logmel, np.float32)[None, None],
                                  dev)                                        # (1, 1, 96, 64)
        with self._on(self.copy_in):
            self._mark(frame, self.copy_in)
            image = host_image.to(dev, non_blocking=True)
            mel = None if host_mel is None else host_mel.to(dev, non_blocking=True)
            self._mark(frame, self.copy_in)
        self._handoff(self.copy_in, self.compute)
        # -- compute: preprocess, the (graphed) step ------------------------------------------
        with self._on(self.compute):
            self._mark(frame, self.compute)
            if self.cuda:   # made on copy-in, used on compute: keep them until compute is done
                image.record_stream(self.compute)
                if mel is not None:
                    mel.record_stream(self.compute)
            r = eng.step_device(paired, image=image, audio=mel)
            self._mark(frame, self.compute)
        self._handoff(self.compute, self.copy_out)
        # -- copy-out: device -> pinned slot --------------------------------------------------
        with self._on(self.copy_out):
            self._mark(frame, self.copy_out)
            keep = r.keep_ratio.float().reshape(())
            if self.cuda:
                r.prob.record_stream(self.copy_out)
                keep.record_stream(self.copy_out)
            slot.download("prob", r.prob)                                   # (H, W) float32
            slot.download("keep", keep)                                     # ()
            self._mark(frame, self.copy_out)
            slot.record(self.copy_out)
        frame.result = EngineResult(np.empty(0, np.float32), r.logits, 0.0, r.window,
                                    r.times_ns)
        return frame

    def _retire(self, frame: _Frame) -> tuple[PairedFrame, EngineResult]:
        frame.slot.wait()      # this frame's copy-out only, not the whole device
        frame.result.prob = frame.slot.buffers["prob"].numpy().copy()
        frame.result.keep_ratio = float(frame.slot.buffers["keep"])
        frame.result.times_ns["decode_end"] = self.engine.clock()
        if self.record_timeline:
            self._spans.append(self._span(frame.marks))
        self.completed += 1
        return frame.paired, frame.result

    def _span(self, marks: list[Any]) -> FrameSpan:
        if self.cuda:
            ms = [float(self._origin.elapsed_time(m)) for m in marks]
        else:
            ms = [(m - self._origin) / 1e6 for m in marks]
        pairs = [(ms[2 * i], ms[2 * i + 1]) for i in range(len(STAGES))]
        return FrameSpan(*pairs)
