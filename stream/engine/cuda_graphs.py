"""The static step replayed from one CUDA graph per batch bucket (``live.engine.cuda_graphs``).

:class:`GraphedStep` holds, for one bucket P and one audio mode, static input buffers
``x (P, 3, S, S)``, ``mel (P, 1, 96, 64)``, ``control (P, T + 4)`` int64 and static outputs
``logits (P, K, S, S)``, ``keep (P,)``. A call copies its inputs into the static inputs,
replays the graph on the current stream and copies the outputs out (a new tensor, enqueued on
the same stream, so it is done before the next replay can overwrite them). The graph is
captured at the first call, after ``warmup`` runs on a side stream, with control rows that
only touch the tables' trash slot and trash stream row: warming up changes no stream's state.

On the CPU the same class runs the step directly on the same static buffers (copy in, call,
copy out), so the bookkeeping, the results and the reuse of the buffers are tested without a
GPU; only capture and replay are CUDA's.

:class:`GraphedSteps` is the engine's step table for graphs: one :class:`GraphedStep` per
(P, embed), built at first use, all sharing one graph memory pool (they replay one at a time on
one stream); the tables growing (more streams) drops them, to be captured again.

Capture rules kept here (see torch's CUDA graph notes): autocast runs with its weight-cast
cache off (``BatchedEngine`` enters ``torch.autocast(..., cache_enabled=False)``; cached casts
made during capture would be freed when autocast exits while the graph still reads them), the
step is the static one (QSCA dense masked: no ``.item()``, no ``nonzero``), and nothing inside
copies from the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pcmanet.audio.frontend import EXAMPLE_FRAMES, MEL_BANDS
from stream.engine.static import StaticStep


class GraphedStep:
    """``(x (P, 3, S, S), mel (P, 1, 96, 64), control (P, T + 4)) -> (logits (P, K, S, S),
    keep (P,))`` through static buffers; a CUDA graph replay on CUDA, the step itself on the
    CPU (see module doc).

    Args:
        step: the static step (``static=True``), its tables on the device the graph runs on.
        P: the bucket: rows of every call.
        warmup: eager runs on a side stream before the capture (CUDA).
        channels_last: keep the static frame buffer channels-last (convolutions in bf16 on a
            GPU prefer it; the model's weights should be converted too).
        pool: a graph memory pool shared with the other buckets' graphs (CUDA; None: own).
    """

    def __init__(self, step: StaticStep, P: int, warmup: int = 3, channels_last: bool = False,
                 pool: Any = None) -> None:
        tb = step.tables
        dev, S = tb.carry_image.device, int(tb.carry_image.shape[-1])
        self.step, self.P, self.warmup, self.pool = step, P, warmup, pool
        self.cuda = dev.type == "cuda"
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.x = torch.zeros(P, 3, S, S, device=dev).contiguous(memory_format=fmt)
        self.mel = torch.zeros(P, 1, EXAMPLE_FRAMES, MEL_BANDS, device=dev)
        # Blank rows: write the trash slot, read it as the window, the trash stream's tables.
        blank = [tb.trash_slot] * (step.T + 1) + [tb.trash_stream, 1, 0]
        self.control = torch.tensor([blank] * P, dtype=torch.int64, device=dev)
        self.graph: Any = None                   # torch.cuda.CUDAGraph once captured
        self.logits: Tensor | None = None        # static outputs (the graph's, or preallocated)
        self.keep: Tensor | None = None
        self.calls = self.replays = 0

    def static_buffers(self) -> list[Tensor]:
        """Inputs and outputs every call reuses (tests check they are never reallocated)."""
        return [t for t in (self.x, self.mel, self.control, self.logits, self.keep)
                if t is not None]

    def __call__(self, x: Tensor, mel: Tensor, control: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[0] != self.P or mel.shape[0] != self.P or control.shape[0] != self.P:
            raise ValueError(f"bucket {self.P}: got rows x {x.shape[0]}, mel {mel.shape[0]}, "
                             f"control {control.shape[0]}")
        if self.cuda and self.graph is None:
            self._capture()                      # on blank rows, before the real inputs land
        self.x.copy_(x)
        self.mel.copy_(mel)
        self.control.copy_(control, non_blocking=True)
        if self.cuda:
            self.graph.replay()
            self.replays += 1
        else:
            logits, keep = self.step(self.x, self.mel, self.control)
            if self.logits is None or self.keep is None:
                self.logits, self.keep = torch.empty_like(logits), torch.empty_like(keep)
            self.logits.copy_(logits)
            self.keep.copy_(keep)
        self.calls += 1
        assert self.logits is not None and self.keep is not None
        return self.logits.clone(), self.keep.clone()   # copied out before the next replay

    def _capture(self) -> None:
        """Warm up on a side stream (cuDNN/cuBLAS choose their kernels, lazy buffers
        appear), then capture one step into ``self.graph``; the static inputs hold blank
        rows meanwhile (trash slot and trash stream only)."""
        here = torch.cuda.current_stream(self.x.device)
        side = torch.cuda.Stream(self.x.device)
        side.wait_stream(here)
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.step(self.x, self.mel, self.control)
        here.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.logits, self.keep = self.step(self.x, self.mel, self.control)
        self.graph = graph


class GraphedSteps:
    """The step per (bucket P, embed) for :class:`~stream.engine.batch.BatchedEngine` with
    ``graphs``: one :class:`GraphedStep` each, captured at first use (module doc).

    Args:
        steps: the static steps by embed (True: rows' audio embedded; False: reused), each
            with ``static=True``.
        autocast: a context manager factory the engine's steps run under (its precision,
            weight-cast cache off); :meth:`warm` enters it.
        channels_last: the graphs' frame buffers channels-last.
        warmup: eager runs before each capture.
    """

    compiling = False        # as StepVariants: graphs are not torch.compile

    def __init__(self, steps: dict[bool, StaticStep], autocast: Callable[[], Any],
                 channels_last: bool = False, warmup: int = 3) -> None:
        self.steps, self.channels_last, self.warmup = steps, channels_last, warmup
        self.autocast = autocast
        self.graphs: dict[tuple[int, bool], GraphedStep] = {}
        device = next(iter(steps.values())).tables.carry_image.device
        self.pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None

    def __call__(self, P: int, embed: bool) -> GraphedStep:
        g = self.graphs.get((P, embed))
        if g is None:
            g = GraphedStep(self.steps[embed], P, self.warmup, self.channels_last, self.pool)
            self.graphs[(P, embed)] = g
        return g

    @property
    def captured(self) -> int:
        """Graphs captured so far (CUDA; 0 on the CPU)."""
        return sum(g.graph is not None for g in self.graphs.values())

    @property
    def replays(self) -> int:
        return sum(g.replays for g in self.graphs.values())

    def warm(self, variants: list[tuple[int, bool]]) -> None:
        """Build (and on CUDA capture) these (P, embed) graphs now, ahead of the first frame
        (a call on blank rows that only touch the trash slot and trash stream)."""
        with torch.inference_mode(), self.autocast():
            for P, embed in variants:
                g = self(P, embed)
                g(g.x.clone(), g.mel.clone(), g.control.clone())

    def tables_changed(self) -> None:
        """The tables were reallocated (more streams): every graph captures again."""
        self.graphs.clear()
