"""The streaming engine's parts (docs/design.md 5): CIM carry settings and step results.

:class:`CarryConfig` says how CIM masks are carried from frame to frame (the static step does
it, :mod:`stream.engine.static`); :class:`EngineResult` and :class:`DeviceResult` are what a
step returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SILENCE_LOGMEL = float(np.log(0.01))  # log-mel of digital silence: ln(0 + 0.01)


@dataclass(frozen=True)
class CarryConfig:
    """CIM carry-over across frames.

    enabled: carry the previous frame's CIM masks (off: the reference selection every frame).
    refresh_every: K; every K-th frame uses the plain selection (K = 1: always).
    change_threshold: a token region counts as changed where the mean absolute difference of
        the normalised input from the previous frame exceeds this.
    audio_change: a full refresh when 1 - cosine(audio embedding, previous) exceeds this.
    dilate: grow the carried masks by this many tokens (motion tolerance).
    """

    enabled: bool = False
    refresh_every: int = 8
    change_threshold: float = 0.15
    audio_change: float = 0.05
    dilate: int = 1

    def __post_init__(self) -> None:
        if self.refresh_every < 1 or self.dilate < 0 or self.change_threshold < 0:
            raise ValueError(f"bad CarryConfig {self}: need refresh_every >= 1, dilate >= 0, "
                             "change_threshold >= 0")


@dataclass
class EngineResult:
    """The newest frame's mask and what it took.

    prob: (H, W) float32 foreground probability at the source frame's size.
    logits: (1, K, S, S) the newest frame's finest logits at model size (K = 1 or classes).
    keep_ratio: fraction of the query tokens of CIM-selected stages (3, 2, 1) computed.
    window: frame indices of the T-frame window, oldest first (the newest last).
    times_ns: stage timestamps (clock) of this step: preprocess/encode/decode start and end.
    """

    prob: np.ndarray
    logits: Tensor
    keep_ratio: float
    window: list[int]
    times_ns: dict[str, int] = field(default_factory=dict)


@dataclass
class DeviceResult:
    """:class:`EngineResult` before it leaves the device: prob (H, W) float32 and keep_ratio
    (0-dim) are device tensors."""

    prob: Tensor
    logits: Tensor
    keep_ratio: Tensor
    window: list[int]
    times_ns: dict[str, int] = field(default_factory=dict)

    def to_host(self, clock: Callable[[], int]) -> EngineResult:
        """The mask and keep ratio copied to the host (waits for the device); ``decode_end``
        is stamped by ``clock`` once they are there."""
        prob = self.prob.cpu().numpy()
        keep = float(self.keep_ratio)
        return EngineResult(prob, self.logits, keep, self.window,
                            {**self.times_ns, "decode_end": clock()})


def frame_prob(logits: Tensor, height: int, width: int) -> Tensor:
    """(1, K, S, S) logits -> (height, width) float32 foreground probability at the frame's
    size (bilinear upsampling, then :func:`foreground_prob`)."""
    full = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return foreground_prob(full)[0].float()


def foreground_prob(logits: Tensor) -> Tensor:
    """(F, K, H, W) logits -> (F, H, W) probability that a pixel is a sounding object:
    sigmoid for K = 1; 1 - P(background, class 0) for K > 1 (AVSS heads)."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return 1 - torch.softmax(logits, dim=1)[:, 0]
