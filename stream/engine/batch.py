"""The batched streaming engine (docs/design.md 5, "Many streams"): one model step for N streams.

Per stream (:class:`StreamState`): its :class:`FeatureCache`, :class:`CimCarry`, the audio
embedding it may reuse (``audio_rate_hz``) and its counters. Shared (:class:`BatchedEngine`):
the model, the preprocessor and the batched step. :meth:`BatchedEngine.step` takes the newest
paired frame of each of N streams (at most one per stream) and

1. preprocesses each frame to (1, 3, S, S) (frames may differ in size) -> x (N, 3, S, S),
2. embeds the audio of the streams that need a new embedding in one call -> (N, D),
3. encodes the N frames in one ``model.encode_frames`` call and puts row i into stream i's
   cache,
4. builds the N windows of T cached frames clip-major -> (N*T) rows, stacks the carried CIM
   masks (ones for a stream with no restriction), and decodes the newest frame of every window
   in one ``model.decode`` call (targets T-1, 2T-1, ...),
5. updates each stream's carry and upsamples its logits to its own frame size.

Batch-size buckets: with ``buckets`` (e.g. 1, 2, 4, 8), encode and decode run on a batch padded
to the smallest bucket >= N (the last real row repeated; the padded rows' outputs are thrown
away), so every step has one of a few static shapes. That is what a CUDA graph per bucket needs;
on the CPU it only costs the padded rows, so the default there is no padding.

**Contract** (tested): a stream's logits in a batch of N equal its logits when run alone,
within 1e-4, with CIM carry off and on.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pcmanet.audio.frontend import EXAMPLE_FRAMES, MEL_BANDS
from pcmanet.model import FrameFeatures, PCMANet, PCMANetOutput, keep_fraction
from stream.buffers.frames import PairedFrame
from stream.engine.parts import (
    SILENCE_LOGMEL,
    CacheEntry,
    CarryConfig,
    CimCarry,
    DeviceResult,
    EngineResult,
    FeatureCache,
    frame_prob,
)
from stream.engine.preprocess import Preprocessor

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # batch sizes a CUDA graph would be captured for


def pad_to(n: int, buckets: Sequence[int] | None) -> int:
    """The batch size ``n`` rows are padded to: the smallest bucket >= n (None: n itself)."""
    if n < 1:
        raise ValueError(f"a batch needs at least one row, got {n}")
    if not buckets:
        return n
    ordered = sorted(buckets)
    i = bisect.bisect_left(ordered, n)
    if i == len(ordered):
        raise ValueError(f"batch of {n} exceeds the largest bucket {ordered[-1]}")
    return ordered[i]


def _rows(start: int, stop: int) -> Callable[[Tensor], Tensor]:
    """A function taking rows start:stop of a tensor (for ``FrameFeatures.apply``)."""
    return lambda t: t[start:stop]


def _pad_rows(x: Tensor, size: int) -> Tensor:
    """(n, ...) -> (size, ...), the last row repeated."""
    n = x.shape[0]
    if n == size:
        return x
    return torch.cat([x, x[-1:].expand(size - n, *x.shape[1:])])


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


@dataclass
class BatchItem:
    """One stream's frame in a batched step.

    state: the stream's :class:`StreamState`.
    paired: the frame and its log-mel window.
    image: (H, W, 3) uint8 already on the device (None: ``paired.frame.image`` is copied).
    audio: (1, 1, 96, 64) log-mel on the device (None: from ``paired.logmel``).
    """

    state: StreamState
    paired: PairedFrame
    image: Tensor | None = None
    audio: Tensor | None = None


class BatchedEngine:
    """Segments the newest frame of each of N streams in one encode and one decode.

    Args:
        model: a PCMANet in eval mode with an audio encoder (log-mel input).
        image_size: model input side S.
        device: where the model runs.
        spacing_s: time between window frames.
        carry: CIM carry-over settings of every stream.
        cache_dtype: feature cache storage dtype (None: as computed).
        keep_inputs: keep inputs in the caches (clip-mode comparison).
        clock: stamps stage times.
        audio_rate_hz: per stream, recompute the audio embedding at most this often.
        precision: "fp32" or "bf16" (autocast).
        encode: ``(x (N, 3, S, S), emb (N, D)) -> FrameFeatures``; default
            ``model.encode_frames`` (a CUDA graph per bucket would go here).
        buckets: pad every batch to one of these sizes (see the module docstring); None: no
            padding.
    """

    def __init__(self, model: PCMANet, image_size: int, device: torch.device | str = "cpu",
                 spacing_s: float = 1.0, carry: CarryConfig | None = None,
                 cache_dtype: torch.dtype | None = None, keep_inputs: bool = False,
                 clock: Callable[[], int] = time.monotonic_ns,
                 audio_rate_hz: float | None = None, precision: str = "fp32",
                 encode: Callable[[Tensor, Tensor], FrameFeatures] | None = None,
                 buckets: Sequence[int] | None = None) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if audio_rate_hz is not None and audio_rate_hz <= 0:
            raise ValueError(f"audio_rate_hz must be > 0 or None, got {audio_rate_hz}")
        if model.audio_encoder is None:
            raise ValueError("the streaming engine needs a model with an audio encoder "
                             "(log-mel input); load it with vggish=PATH or a light encoder")
        if buckets is not None and (not buckets or min(buckets) < 1):
            raise ValueError(f"buckets must be sizes >= 1, got {buckets}")
        self.model, self.size, self.device = model.eval(), image_size, torch.device(device)
        self.T, self.spacing_s, self.clock = model.num_frames, spacing_s, clock
        self.precision, self.buckets = precision, tuple(buckets) if buckets else None
        self.carry_cfg, self.cache_dtype, self.keep_inputs = carry or CarryConfig(), \
            cache_dtype, keep_inputs
        self._audio_period_ns = None if audio_rate_hz is None else round(1e9 / audio_rate_hz)
        self._encode = encode or model.encode_frames
        self.preprocess = Preprocessor(image_size, self.device)
        self._silence = torch.full((1, 1, EXAMPLE_FRAMES, MEL_BANDS), SILENCE_LOGMEL,
                                   device=self.device)
        self.steps = self.rows = self.padded_rows = 0

    def new_stream(self) -> StreamState:
        """State for one more stream (its cache sized for this engine's window)."""
        horizon = (self.T - 1) * self.spacing_s + 0.5
        return StreamState(horizon, min(0.1, self.spacing_s / 4), self.carry_cfg,
                           self.cache_dtype, self.keep_inputs)

    def audio_input(self, logmel: object) -> Tensor:
        """(96, 64) log-mel window -> (1, 1, 96, 64) on the device; None -> silence."""
        if logmel is None:
            return self._silence
        return torch.as_tensor(logmel, dtype=torch.float32).to(self.device)[None, None]

    # -- the step -------------------------------------------------------------------------------
    def step(self, items: Sequence[tuple[StreamState, PairedFrame]]) -> list[EngineResult]:
        """:meth:`step_device` on frames in host memory, masks back to the host (waits)."""
        return [r.to_host(self.clock) for r in self.step_device([BatchItem(s, p)
                                                                 for s, p in items])]

    def step_device(self, items: Sequence[BatchItem]) -> list[DeviceResult]:
        """One batched step; results (one per item, in order) stay on the device."""
        if not items:
            return []
        if len({id(it.state) for it in items}) != len(items):
            raise ValueError("a batch holds at most one frame per stream")
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            return self._step(items)

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

