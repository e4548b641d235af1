"""The streaming engine's parts (docs/design.md 5): feature cache, CIM carry-over, results.

:class:`FeatureCache` keeps per-frame features by capture time, :class:`CimCarry` carries CIM
masks from frame to frame (see :mod:`stream.engine.engine`), :class:`EngineResult` and
:class:`DeviceResult` are what a step returns. Each stream has its own cache and carry
(:class:`stream.engine.batch.StreamState`); the single- and multi-stream engines share them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pcmanet.model import FrameFeatures
from stream.buffers.frames import NS_PER_S
from stream.buffers.sync import window_indices

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
class CacheEntry:
    """One cached frame: its features (F = 1) and, for clip-mode comparison, its inputs."""

    t_capture_ns: int
    frame_index: int
    feats: FrameFeatures
    image: Tensor | None = None   # (1, 3, S, S) normalised input
    audio: Tensor | None = None   # (1, 1, 96, 64) log-mel example


def _cast(feats: FrameFeatures, dtype: torch.dtype) -> FrameFeatures:
    return feats.apply(lambda x: x.to(dtype))


class FeatureCache:
    """Time-indexed, bounded cache of per-frame features.

    The newest frame is always held; older frames are retained at most one per ``retain_s``
    (so a 4 s window history at 30 FPS keeps ~40 frames, not 120) and only while they can
    still be chosen for a window (``horizon_s`` behind the newest).

    Args:
        horizon_s: how far back frames are kept, (T - 1) * spacing plus a margin.
        retain_s: minimum spacing of retained older frames.
        dtype: storage dtype (float16 halves memory; results change slightly, see docs/results.md).
        keep_inputs: also keep each frame's model inputs (clip-mode comparison, benchmark).
    """

    def __init__(self, horizon_s: float, retain_s: float = 0.1,
                 dtype: torch.dtype | None = None, keep_inputs: bool = False) -> None:
        self.horizon_ns, self.retain_ns = round(horizon_s * NS_PER_S), round(retain_s * NS_PER_S)
        self.dtype, self.keep_inputs = dtype, keep_inputs
        self.entries: list[CacheEntry] = []
        self.inserted = self.evicted = 0

    def put(self, entry: CacheEntry) -> None:
        """Add the newest frame (capture times must ascend)."""
        if self.entries and entry.t_capture_ns < self.entries[-1].t_capture_ns:
            raise ValueError("frames must enter the cache in capture order")
        if self.dtype is not None:
            entry.feats = _cast(entry.feats, self.dtype)
        if not self.keep_inputs:
            entry.image = entry.audio = None
        # The previous newest stays only if it is retain_s after the last retained one.
        if len(self.entries) >= 2 and (self.entries[-1].t_capture_ns
                                       - self.entries[-2].t_capture_ns < self.retain_ns):
            self.entries.pop()
            self.evicted += 1
        self.entries.append(entry)
        self.inserted += 1
        cutoff = entry.t_capture_ns - self.horizon_ns
        drop = 0
        while drop < len(self.entries) - 1 and self.entries[drop + 1].t_capture_ns <= cutoff:
            drop += 1  # keep one frame at or before the cutoff: it is the nearest to it
        if drop:
            del self.entries[:drop]
            self.evicted += drop

    def window(self, T: int, spacing_s: float) -> list[CacheEntry]:
        """The T entries of the newest frame's window, oldest first (the newest last)."""
        idx = window_indices([e.t_capture_ns for e in self.entries], T=T, spacing_s=spacing_s)
        return [self.entries[i] for i in idx]

    def features(self, entries: list[CacheEntry]) -> FrameFeatures:
        """The entries' features concatenated (F = len(entries)), in float32."""
        feats = FrameFeatures.cat([e.feats for e in entries])
        return feats if self.dtype is None else _cast(feats, torch.float32)

    def __len__(self) -> int:
        return len(self.entries)

    def stats(self) -> dict[str, int]:
        return {"held": len(self.entries), "inserted": self.inserted, "evicted": self.evicted}


class CimCarry:
    """Carries CIM masks from frame to frame (see the module docstring).

    State: the previous frame's own (unrestricted) CIM masks, its input and audio embedding.
    Every operation is a tensor op on the model's device (no host synchronisation).
    """

    def __init__(self, cfg: CarryConfig) -> None:
        self.cfg = cfg
        self._masks: list[Tensor] | None = None
        self._image: Tensor | None = None
        self._audio: Tensor | None = None
        self._since_refresh = 0
        self.frames = self.scheduled_refreshes = 0

    def restrict(self, image: Tensor, audio: Tensor) -> list[Tensor] | None:
        """Masks that restrict the new frame's query selection, or None for a full refresh.

        image: (1, 3, S, S) the new frame's input; audio: (1, C) its audio embedding.
        """
        self.frames += 1
        if (not self.cfg.enabled or self._masks is None or self._image is None
                or self._audio is None or self._since_refresh + 1 >= self.cfg.refresh_every):
            self.scheduled_refreshes += 1
            self._since_refresh = 0
            return None
        self._since_refresh += 1
        diff = (image - self._image).abs().mean(dim=1, keepdim=True)        # (1, 1, S, S)
        moved = 1 - F.cosine_similarity(audio.float(), self._audio.float(), dim=1)  # (1,)
        refresh = (moved > self.cfg.audio_change).float().view(1, 1, 1, 1)
        out = []
        for prev in self._masks:                                            # (1, 1, gh, gw)
            grid = (int(prev.shape[-2]), int(prev.shape[-1]))
            changed = (F.adaptive_avg_pool2d(diff, grid) > self.cfg.change_threshold).to(prev)
            seed = torch.maximum(prev, changed)
            if self.cfg.dilate:
                r = self.cfg.dilate
                seed = F.max_pool2d(seed, 2 * r + 1, stride=1, padding=r)
            out.append(torch.maximum(seed, refresh))
        return out

    def update(self, own_masks: list[Tensor], image: Tensor, audio: Tensor) -> None:
        """Remember the frame just decoded: its own CIM masks, input and audio embedding."""
        self._masks = [m.detach() for m in own_masks]
        self._image, self._audio = image.detach(), audio.detach()


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
