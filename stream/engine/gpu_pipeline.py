"""Pipelined submission of frames to the streaming engine: copy-in | compute | copy-out.

On CUDA (docs/design.md 5) three streams overlap consecutive frames:

* copy-in: the frame (uint8 BGR) and its log-mel window are copied by the CPU into a ring of
  pinned host buffers, then to the device with ``non_blocking`` copies; an event marks them done;
* compute: waits on that event, preprocesses on the GPU (CuPy kernel or torch ops), encodes,
  decodes (the model avoids host synchronisation on CUDA); an event marks the mask ready;
* copy-out: waits on it and copies the mask and keep ratio into pinned host buffers; an event
  marks the frame finished.

At most ``max_in_flight`` (2) frames are in flight: :meth:`StreamRunner.submit` first retires
the oldest when the ring is full (waiting on its event, never ``torch.cuda.synchronize()``).
:meth:`StreamRunner.poll` returns finished frames in order without waiting.

On the CPU the same class runs with the stages in sequence (no streams; events are complete at
once), so the slot ring, ordering and in-flight bound are exercised by the CPU tests; what a
GPU adds (real overlap) is measured by ``python -m stream.bench`` where one exists.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pcmanet.audio.frontend import EXAMPLE_FRAMES, MEL_BANDS
from stream.buffers.frames import PairedFrame
from stream.engine.engine import EngineResult, StreamingEngine


@dataclass
class _Slot:
    """One ring entry: pinned host buffers (CUDA) and the frame they belong to."""

    image: Tensor | None = None       # (H, W, 3) uint8, pinned
    mel: Tensor | None = None         # (1, 1, 96, 64) float32, pinned
    prob: Tensor | None = None        # (H, W) float32, pinned
    keep: Tensor | None = None        # () float32, pinned
    done: Any = None                  # torch.cuda.Event after copy-out (None on CPU)
    result: EngineResult | None = None
    paired: PairedFrame | None = None


class StreamRunner:
    """Feeds :class:`StreamingEngine` with up to ``max_in_flight`` frames in flight.

    Args:
        engine: the streaming engine (its device decides CUDA or CPU).
        max_in_flight: frames submitted but not yet returned by :meth:`poll` (>= 1).
    """

    def __init__(self, engine: StreamingEngine, max_in_flight: int = 2) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.engine, self.max_in_flight = engine, max_in_flight
        self.cuda = engine.device.type == "cuda"
        self._slots = [_Slot() for _ in range(max_in_flight)]
        self._next = 0
        self._inflight: deque[_Slot] = deque()
        self.submitted = self.completed = self.max_seen_in_flight = 0
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
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        slot.paired, slot.result = paired, None
        if self.cuda:
            self._submit_cuda(slot, paired)
        else:
            slot.result = self.engine.step(paired)
        self._inflight.append(slot)
        self.submitted += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, len(self._inflight))
        return retired

    def poll(self, wait: bool = False) -> list[tuple[PairedFrame, EngineResult]]:
        """Finished frames, oldest first; ``wait``: retire every frame in flight."""
        out = []
        while self._inflight and (wait or self._ready(self._inflight[0])):
            out.append(self._retire(self._inflight.popleft()))
        return out

    # -- internals ---------------------------------------------------------------------------
    def _ready(self, slot: _Slot) -> bool:
        return slot.done is None or bool(slot.done.query())

    def _retire(self, slot: _Slot) -> tuple[PairedFrame, EngineResult]:
        if slot.done is not None:
            slot.done.synchronize()  # this frame's copy-out only, not the whole device
            assert slot.prob is not None and slot.keep is not None and slot.result is not None
            slot.result.prob = slot.prob.numpy().copy()
            slot.result.keep_ratio = float(slot.keep)
            slot.done = None
        assert slot.paired is not None and slot.result is not None
        self.completed += 1
        return slot.paired, slot.result

    def _pinned(self, slot: _Slot, name: str, shape: tuple[int, ...], dtype: torch.dtype
                ) -> Tensor:
        buf = getattr(slot, name)
        if buf is None or tuple(buf.shape) != shape:
            buf = torch.empty(shape, dtype=dtype, pin_memory=True)
            setattr(slot, name, buf)
        return buf  # type: ignore[no-any-return]

    def _submit_cuda(self, slot: _Slot, paired: PairedFrame) -> None:
        eng, image = self.engine, paired.frame.image
        host_img = self._pinned(slot, "image", tuple(image.shape), torch.uint8)
        host_img.numpy()[...] = image                                       # CPU copy to pinned
        host_mel = self._pinned(slot, "mel", (1, 1, EXAMPLE_FRAMES, MEL_BANDS), torch.float32)
        mel_dev: Tensor | None = None
        with torch.cuda.stream(self.copy_in):
            img_dev = host_img.to(eng.device, non_blocking=True)
            if paired.logmel is not None:
                host_mel.numpy()[0, 0] = np.asarray(paired.logmel, np.float32)
                mel_dev = host_mel.to(eng.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.copy_in)
        self.compute.wait_event(copied)
        with torch.cuda.stream(self.compute):
            img_dev.record_stream(self.compute)
            if mel_dev is not None:
                mel_dev.record_stream(self.compute)
            r = eng.step_device(paired, image=img_dev, audio=mel_dev)
            ready = torch.cuda.Event()
            ready.record(self.compute)
        self.copy_out.wait_event(ready)
        host_prob = self._pinned(slot, "prob", tuple(r.prob.shape), torch.float32)
        host_keep = self._pinned(slot, "keep", (), torch.float32)
        with torch.cuda.stream(self.copy_out):
            r.prob.record_stream(self.copy_out)
            r.keep_ratio.record_stream(self.copy_out)
            host_prob.copy_(r.prob, non_blocking=True)
            host_keep.copy_(r.keep_ratio.float(), non_blocking=True)
            slot.done = torch.cuda.Event()
            slot.done.record(self.copy_out)
        slot.result = EngineResult(np.empty(0, np.float32), r.logits, 0.0, r.window, r.times_ns)

