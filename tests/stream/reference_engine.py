"""Today's engine before the feature ring, kept as the oracle the ring and the static step are
tested against: per-frame ``FrameFeatures`` in a time-indexed list per stream, CIM carry-over
computed per stream with the refresh decided in ``restrict``, one ``model.decode`` of the
cached windows (QSCA's gather path on the CPU). Test code only."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pcmanet.model import FrameFeatures, PCMANet, PCMANetOutput, keep_fraction
from stream.buffers.frames import NS_PER_S, PairedFrame
from stream.buffers.sync import window_indices
from stream.engine.batch import _pad_rows, pad_to
from stream.engine.parts import CarryConfig, DeviceResult, EngineResult, frame_prob
from stream.engine.preprocess import Preprocessor


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
        dtype: storage dtype (float16 halves memory; results change slightly, see README).
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


class StreamState:
    """One stream's engine state: feature cache, CIM carry, audio reuse and counters.

    Args:
        horizon_s, retain_s, cache_dtype, keep_inputs: the :class:`FeatureCache`.
        carry: CIM carry-over settings.
    """

    def __init__(self, horizon_s: float, retain_s: float, carry: CarryConfig,
                 cache_dtype: torch.dtype | None = None, keep_inputs: bool = False) -> None:
        self.cache = FeatureCache(horizon_s, retain_s=retain_s, dtype=cache_dtype,
                                  keep_inputs=keep_inputs)
        self.carry = CimCarry(carry)
        self.last_audio: tuple[int, Tensor] | None = None   # (capture ns, embedding (1, D))
        self.audio_embeddings = 0                           # audio encoder runs
        self.frames = 0

    def stats(self) -> dict[str, int]:
        return {"frames": self.frames, "audio_embeddings": self.audio_embeddings,
                **{f"cache_{k}": v for k, v in self.cache.stats().items()},
                "carry_refreshes": self.carry.scheduled_refreshes}




def _rows(start: int, stop: int):
    return lambda t: t[start:stop]


@dataclass
class BatchItem:
    state: StreamState
    paired: PairedFrame
    image: Tensor | None = None
    audio: Tensor | None = None


class ReferenceEngine:
    """The batched engine as it was before the ring (eager, FeatureCache per stream)."""

    def __init__(self, model: PCMANet, image_size: int, spacing_s: float = 1.0,
                 carry: CarryConfig | None = None, audio_rate_hz: float | None = None,
                 buckets: Sequence[int] | None = None, cache_dtype: torch.dtype | None = None
                 ) -> None:
        self.model, self.size, self.device = model.eval(), image_size, torch.device("cpu")
        self.T, self.spacing_s, self.clock = model.num_frames, spacing_s, time.monotonic_ns
        self.buckets = tuple(buckets) if buckets else None
        self.carry_cfg, self.cache_dtype = carry or CarryConfig(), cache_dtype
        self._audio_period_ns = None if audio_rate_hz is None else round(1e9 / audio_rate_hz)
        self._encode = model.encode_frames
        self.preprocess = Preprocessor(image_size)
        self._silence = torch.full((1, 1, 96, 64), float(torch.log(torch.tensor(0.01))))
        self.steps = self.rows = self.padded_rows = 0

    def new_stream(self) -> StreamState:
        horizon = (self.T - 1) * self.spacing_s + 0.5
        return StreamState(horizon, min(0.1, self.spacing_s / 4), self.carry_cfg,
                           self.cache_dtype, False)

    def audio_input(self, logmel: object) -> Tensor:
        if logmel is None:
            return self._silence
        return torch.as_tensor(logmel, dtype=torch.float32)[None, None]

    def step(self, items: Sequence[tuple[StreamState, PairedFrame]]) -> list[EngineResult]:
        with torch.inference_mode():
            return [r.to_host(self.clock)
                    for r in self._step([BatchItem(s, p) for s, p in items])]

    def _step(self, items: Sequence[BatchItem]) -> list[DeviceResult]:
        N, T = len(items), self.T
        P = pad_to(N, self.buckets)
        times = {"preprocess_start": self.clock()}
        x = torch.cat([self.preprocess(it.paired.frame.image if it.image is None else it.image)
                       for it in items])                                    # (N, 3, S, S)
        mels = [self.audio_input(it.paired.logmel) if it.audio is None else it.audio
                for it in items]                                            # N x (1, 1, 96, 64)
        times["encode_start"] = self.clock()
        emb = self._audio_embeddings(items, mels)                           # (N, D)
        feats = self._encode(_pad_rows(x, P), _pad_rows(emb, P))            # F = P rows
        windows: list[FrameFeatures] = []
        entry_lists = []
        for i, it in enumerate(items):
            frame = it.paired.frame
            row = feats.apply(_rows(i, i + 1))                                  # F = 1
            it.state.cache.put(CacheEntry(frame.t_capture_ns, frame.index, row, x[i:i + 1],
                                          mels[i]))
            entries = it.state.cache.window(T, self.spacing_s)
            entry_lists.append(entries)
            windows.append(it.state.cache.features(entries))                # F = T
        times["decode_start"] = self.clock()
        windows += [windows[-1]] * (P - N)                                  # padded clips
        a0 = feats.audio[:N]                                                # (N, C)
        restrict = self._restrict(items, x, a0, P)
        targets = torch.arange(P, device=self.device) * T + (T - 1)         # (P,) newest rows
        out = self.model.decode(FrameFeatures.cat(windows), targets,        # P*T rows
                                out_size=(self.size, self.size), restrict=restrict)
        results = []
        for i, it in enumerate(items):
            it.state.carry.update([u[i:i + 1] for u in out.uncertain], x[i:i + 1], a0[i:i + 1])
            logits = out.logits[0][i:i + 1].float()                         # (1, K, S, S)
            prob = frame_prob(logits, *it.paired.frame.image.shape[:2])     # (H, W)
            own = PCMANetOutput([], [], [m[i:i + 1] for m in out.masks], [])  # this stream's
            results.append(DeviceResult(prob, logits, keep_fraction(own),
                                        [e.frame_index for e in entry_lists[i]], dict(times)))
            it.state.frames += 1
        end = self.clock()  # host time: kernels may still run on a GPU
        for r in results:
            r.times_ns["decode_end"] = end
        self.steps, self.rows, self.padded_rows = self.steps + 1, self.rows + N, \
            self.padded_rows + P - N
        return results

    def _audio_embeddings(self, items: Sequence[BatchItem], mels: list[Tensor]) -> Tensor:
        """(N, D): each stream's embedding, reused within its audio period, the others
        computed in one audio-encoder call."""
        reuse: list[Tensor | None] = []
        for it in items:
            last, t = it.state.last_audio, it.paired.frame.t_capture_ns
            ok = (last is not None and self._audio_period_ns is not None
                  and 0 <= t - last[0] < self._audio_period_ns)
            reuse.append(last[1] if ok and last is not None else None)
        todo = [i for i, r in enumerate(reuse) if r is None]
        if todo:
            fresh = self.model.embed_audio(torch.cat([mels[i] for i in todo]))  # (n, D)
            for j, i in enumerate(todo):
                emb = fresh[j:j + 1]
                items[i].state.last_audio = (items[i].paired.frame.t_capture_ns, emb)
                items[i].state.audio_embeddings += 1
                reuse[i] = emb
        return torch.cat(reuse)  # type: ignore[arg-type]

    def _restrict(self, items: Sequence[BatchItem], x: Tensor, a0: Tensor, P: int
                  ) -> list[Tensor] | None:
        """Per stage, the streams' carried CIM masks stacked (P, 1, gh, gw): ones for a stream
        on a full refresh and for padded rows; None when no stream restricts."""
        per = [it.state.carry.restrict(x[i:i + 1], a0[i:i + 1]) for i, it in enumerate(items)]
        some = next((r for r in per if r is not None), None)
        if some is None:
            return None
        stages = []
        for k, like in enumerate(some):
            rows = [torch.ones_like(like) if r is None else r[k] for r in per]
            rows += [torch.ones_like(like)] * (P - len(per))
            stages.append(torch.cat(rows))
        return stages

