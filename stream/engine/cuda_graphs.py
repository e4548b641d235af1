"""CUDA graph of the per-frame encoder (``live.engine.cuda_graphs``), for the streaming engine.

The per-frame work (backbone, lateral convs, AVGA, QSCA tokens and keys/values) has static
shapes for a given input size, so it is captured once into a CUDA graph and replayed for every
new frame: one launch instead of a few hundred kernel launches. Inputs are copied into the
graph's static buffers; outputs are cloned out of its static buffers, because the feature cache
keeps them while the next replay overwrites the buffers. CPU tensors never reach here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pcmanet.model import FrameFeatures, PCMANet


def _clone(f: FrameFeatures) -> FrameFeatures:
    return f.apply(torch.clone)


class GraphedEncoder:
    """``encode_frames(x (1, 3, S, S), emb (1, D)) -> FrameFeatures`` through a CUDA graph,
    captured at the first call (after 3 warm-up runs on a side stream)."""

    def __init__(self, model: PCMANet, warmup: int = 3) -> None:
        self.model, self.warmup = model, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self._x: Tensor | None = None
        self._emb: Tensor | None = None
        self._out: FrameFeatures | None = None
        self.replays = 0

    def _capture(self, x: Tensor, emb: Tensor) -> None:
        self._x, self._emb = x.clone(), emb.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.model.encode_frames(self._x, self._emb)
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._out = self.model.encode_frames(self._x, self._emb)

    def __call__(self, x: Tensor, emb: Tensor) -> FrameFeatures:
        if not x.is_cuda:
            raise ValueError("CUDA graphs need the engine on a CUDA device")
        if self.graph is None:
            self._capture(x, emb)
        assert self._x is not None and self._emb is not None and self._out is not None
        if x.shape != self._x.shape or emb.shape != self._emb.shape:
            raise ValueError(f"input shapes changed after capture: {tuple(x.shape)}, "
                             f"{tuple(emb.shape)} vs {tuple(self._x.shape)}, "
                             f"{tuple(self._emb.shape)}")
        self._x.copy_(x)
        self._emb.copy_(emb.to(self._emb.dtype))
        assert self.graph is not None
        self.graph.replay()
        self.replays += 1
        return _clone(self._out)
