"""Host staging buffers for copies to and from the device: pinned on CUDA, reused, event-guarded.

A :class:`HostSlot` holds the host buffers of one frame (or one batch) in flight, by name:
frames ``(H, W, 3) uint8``, log-mel windows ``(1, 1, 96, 64) float32``, masks ``(H, W)
float32``, keep ratios ``()``. On CUDA they are pinned, so ``non_blocking`` copies are true
asynchronous DMA, and the slot records one ``torch.cuda.Event`` after the last copy that uses
them; the host waits on that event (that copy only, never the whole device) before it writes
into the buffers again. On the CPU the buffers are plain tensors and there is no event: the
same code runs in sequence, which is what the CPU tests exercise (uploads to the CPU skip the
buffer: the array itself is the input).

:class:`HostRing` is a ring of slots: :meth:`HostRing.acquire` hands out the next one once
its previous copies have finished. :class:`~stream.engine.gpu_pipeline.StreamRunner` keeps one
slot per frame in flight; :meth:`~stream.engine.batch.BatchedEngine.step` (the multi-stream
pipeline's step) uses one per batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


class HostSlot:
    """Named host buffers (pinned on CUDA) and the event of the last copy using them.

    Args:
        pinned: page-locked buffers (needs CUDA).
    """

    def __init__(self, pinned: bool) -> None:
        self.pinned = pinned
        self.buffers: dict[str, Tensor] = {}   # by name: the one used last
        self._kept: dict[tuple[str, tuple[int, ...], torch.dtype], Tensor] = {}
        self.done: Any = None                  # torch.cuda.Event (CUDA), None: nothing pending
        self.allocations = 0                   # buffers made (reuse keeps this flat)

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """The buffer ``name`` of this shape and dtype, made once and reused (pinning memory
        is slow; frames of a few sizes keep one buffer per size)."""
        key = (name, tuple(shape), dtype)
        buf = self._kept.get(key)
        if buf is None:
            buf = self._kept[key] = torch.empty(shape, dtype=dtype, pin_memory=self.pinned)
            self.allocations += 1
        self.buffers[name] = buf
        return buf

    def stage(self, name: str, array: np.ndarray | Tensor, device: torch.device,
              dtype: torch.dtype | None = None) -> Tensor:
        """The host half of :meth:`upload`. For a CUDA ``device``: ``array`` copied into
        buffer ``name`` (a host copy) -> the buffer. For the CPU: the array itself as a tensor
        (shared memory, as ``torch.as_tensor``; a buffer would only add a copy, and the caller
        may keep the tensor after the slot is reused)."""
        src = torch.as_tensor(array)
        if torch.device(device).type == "cpu":
            return src if dtype is None else src.to(dtype)
        buf = self.buffer(name, tuple(src.shape), dtype or src.dtype)
        buf.copy_(src)
        return buf

    def upload(self, name: str, array: np.ndarray | Tensor, device: torch.device,
               dtype: torch.dtype | None = None) -> Tensor:
        """``array`` on ``device``: :meth:`stage`, then a ``non_blocking`` copy on the current
        stream (from pinned memory: asynchronous) -> the device tensor."""
        return self.stage(name, array, device, dtype).to(device, non_blocking=True)

    def download(self, name: str, tensor: Tensor) -> Tensor:
        """``tensor`` copied into host buffer ``name`` (``non_blocking`` on the current
        stream; valid once :meth:`wait` returns) -> the buffer."""
        buf = self.buffer(name, tuple(tensor.shape), tensor.dtype)
        buf.copy_(tensor, non_blocking=True)
        return buf

    def record(self, stream: Any = None) -> None:
        """Mark the copies enqueued so far (on ``stream``, default the current one)."""
        if self.pinned:
            self.done = torch.cuda.Event()
            self.done.record(stream)

    def ready(self) -> bool:
        """Whether every recorded copy has finished (never waits)."""
        return self.done is None or bool(self.done.query())

    def wait(self) -> None:
        """Wait for the recorded copies (this slot's event only)."""
        if self.done is not None:
            self.done.synchronize()
            self.done = None


class HostRing:
    """``slots`` :class:`HostSlot`\\ s used round-robin (see module doc).

    Args:
        slots: frames (or batches) whose buffers may be in use at once (>= 1).
        pinned: pinned buffers and events (CUDA).
    """

    def __init__(self, slots: int, pinned: bool) -> None:
        if slots < 1:
            raise ValueError(f"a host ring needs at least one slot, got {slots}")
        self.slots = [HostSlot(pinned) for _ in range(slots)]
        self._next = 0

    def acquire(self) -> HostSlot:
        """The next slot, once the copies of its previous use have finished."""
        slot = self.slots[self._next]
        self._next = (self._next + 1) % len(self.slots)
        slot.wait()
        return slot

    @property
    def allocations(self) -> int:
        return sum(s.allocations for s in self.slots)
