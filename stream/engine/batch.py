"""The batched streaming engine (docs/design.md 5 and 5a): one static step for N streams.

Per stream (:class:`StreamState`, host): its ring index (which slot holds which frame, the
window choice), its CIM carry schedule, its audio reuse and counters; its device rows live in
the engine's :class:`~stream.engine.ring.DeviceTables`. Shared (:class:`BatchedEngine`): the
model, the preprocessor and the step variants. :meth:`BatchedEngine.step` takes the newest
paired frame of each of N streams (at most one per stream) and

1. preprocesses each frame to (1, 3, S, S) (frames may differ in size) -> x (N, 3, S, S),
2. plans each stream's ring write and window on the host, and whether its carry refreshes and
   its audio embedding is reused -> one (P, T + 4) int64 control tensor,
3. runs the :class:`~stream.engine.static.StaticStep` (audio embedding, encode, ring write and
   window gather, CIM carry, decode of the newest frames) -> logits (P, K, S, S), keep (P,),
4. commits each stream's plan (only now: a step that raises leaves every stream as it was)
   and upsamples its logits to its own frame size.

Batch-size buckets: with ``buckets`` (e.g. 1, 2, 4, 8), encode and decode run on a batch padded
to the smallest bucket >= N (the last real row repeated; the padded rows' outputs are thrown
away), so every step has one of a few static shapes. That is what a CUDA graph per bucket needs;
on the CPU it only costs the padded rows, so the default there is no padding.

With ``graphs`` (``live.engine.cuda_graphs``) each (bucket, audio mode) step is replayed from
a CUDA graph (:mod:`stream.engine.cuda_graphs`; on the CPU the same static buffers run the
step directly) and the buckets default to :data:`DEFAULT_BUCKETS`. :meth:`BatchedEngine.step`
stages frames, log-mel windows and masks through reused host buffers (pinned on CUDA, one
event per batch: :mod:`stream.engine.staging`) instead of a blocking copy per stream.

**Contract** (tested): a stream's logits in a batch of N equal its logits when run alone,
within 1e-4, with CIM carry off and on.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pcmanet.audio.frontend import EXAMPLE_FRAMES, MEL_BANDS
from pcmanet.model import FrameFeatures, PCMANet
from stream.buffers.frames import PairedFrame
from stream.engine.compiled import StepVariants
from stream.engine.cuda_graphs import GraphedSteps
from stream.engine.parts import (
    SILENCE_LOGMEL,
    CarryConfig,
    DeviceResult,
    EngineResult,
    frame_prob,
)
from stream.engine.preprocess import Preprocessor
from stream.engine.ring import DeviceTables, Plan, WindowIndex, ring_slots
from stream.engine.staging import HostRing
from stream.engine.static import StaticStep

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # batch sizes a CUDA graph is captured for


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


def _pad_rows(x: Tensor, size: int) -> Tensor:
    """(n, ...) -> (size, ...), the last row repeated."""
    n = x.shape[0]
    if n == size:
        return x
    return torch.cat([x, x[-1:].expand(size - n, *x.shape[1:])])


class StreamState:
    """One stream's engine state on the host: its ring index, CIM carry schedule, audio reuse
    and counters (its device rows live in the engine's :class:`DeviceTables`).

    Args:
        row: the stream's row in the per-stream tables (ring slots row*slots ...).
        index: the stream's :class:`WindowIndex`.
        carry: CIM carry-over settings.
        keep_inputs: keep each held frame's model inputs (clip-mode comparison).
    """

    def __init__(self, row: int, index: WindowIndex, carry: CarryConfig,
                 keep_inputs: bool = False) -> None:
        self.row, self.index, self.carry_cfg, self.keep_inputs = row, index, carry, keep_inputs
        self.inputs: dict[int, tuple[Tensor, Tensor]] = {}  # slot -> (x (1,3,S,S), mel)
        self.window: tuple[int, ...] = ()                   # the last step's window slots
        self.last_audio_ns: int | None = None               # capture time of the last embedding
        self.audio_embeddings = 0                           # audio encoder runs
        self.since_refresh = 0
        self.scheduled_refreshes = 0                        # plain-selection (refresh) frames
        self.frames = 0

    @property
    def cache(self) -> WindowIndex:
        """The ring index (held frames, inserted, evicted)."""
        return self.index

    def refresh_due(self) -> bool:
        """Whether this stream's next frame takes the plain CIM selection."""
        return (not self.carry_cfg.enabled or self.frames == 0
                or self.since_refresh + 1 >= self.carry_cfg.refresh_every)

    def reuse_due(self, t_capture_ns: int, period_ns: int | None) -> bool:
        """Whether the next frame reuses the last audio embedding (``audio_rate_hz``)."""
        return (period_ns is not None and self.last_audio_ns is not None
                and 0 <= t_capture_ns - self.last_audio_ns < period_ns)

    def commit(self, plan: Plan, t_capture_ns: int, refresh: bool, reuse: bool,
               inputs: tuple[Tensor, Tensor]) -> None:
        """A step of this stream succeeded: its ring, carry schedule and audio reuse move on."""
        self.index.commit(plan)
        self.window = plan.window
        if self.keep_inputs:
            self.inputs[plan.write] = inputs
            held = {h.slot for h in plan.held}
            self.inputs = {k: v for k, v in self.inputs.items() if k in held}
        if refresh:
            self.scheduled_refreshes += 1
            self.since_refresh = 0
        else:
            self.since_refresh += 1
        if not reuse:
            self.last_audio_ns = t_capture_ns
            self.audio_embeddings += 1
        self.frames += 1

    def stats(self) -> dict[str, int]:
        return {"frames": self.frames, "audio_embeddings": self.audio_embeddings,
                **{f"cache_{k}": v for k, v in self.index.stats().items()},
                "carry_refreshes": self.scheduled_refreshes}


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
    """Segments the newest frame of each of N streams in one static step.

    Args:
        model: a PCMANet in eval mode with an audio encoder (log-mel input).
        image_size: model input side S.
        device: where the model runs.
        spacing_s: time between window frames.
        carry: CIM carry-over settings of every stream.
        cache_dtype: feature ring storage dtype (None: as computed).
        keep_inputs: keep the held frames' inputs (clip-mode comparison).
        clock: stamps stage times.
        audio_rate_hz: per stream, recompute the audio embedding at most this often.
        precision: "fp32" or "bf16" (autocast).
        encode: ``(x (N, 3, S, S), emb (N, D)) -> FrameFeatures``; default
            ``model.encode_frames``.
        buckets: pad every batch to one of these sizes (see the module docstring); None: no
            padding.
        compile: "off" (eager), "on" (compiled; an error if it fails) or "auto" (compiled
            where it works, else eager with one log line saying why); on the CPU in fp32
            ahead of time by another process, else ``torch.compile``: see
            :mod:`stream.engine.compiled`.
        streams: streams the device tables are sized for at first (they grow on demand).
        graphs: replay each bucket's step from a CUDA graph (on the CPU: the same static
            buffers, the step run directly); buckets default to :data:`DEFAULT_BUCKETS`.
            Exclusive with ``compile``.
        channels_last: the model and the step's frames channels-last (None: on with graphs
            on CUDA, where bf16 convolutions prefer it).
    """

    def __init__(self, model: PCMANet, image_size: int, device: torch.device | str = "cpu",
                 spacing_s: float = 1.0, carry: CarryConfig | None = None,
                 cache_dtype: torch.dtype | None = None, keep_inputs: bool = False,
                 clock: Callable[[], int] = time.monotonic_ns,
                 audio_rate_hz: float | None = None, precision: str = "fp32",
                 encode: Callable[[Tensor, Tensor], FrameFeatures] | None = None,
                 buckets: Sequence[int] | None = None, compile: str = "off",
                 streams: int = 1, graphs: bool = False,
                 channels_last: bool | None = None) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if audio_rate_hz is not None and audio_rate_hz <= 0:
            raise ValueError(f"audio_rate_hz must be > 0 or None, got {audio_rate_hz}")
        if model.audio_encoder is None:
            raise ValueError("the streaming engine needs a model with an audio encoder "
                             "(log-mel input); load it with vggish=PATH or a light encoder")
        if buckets is not None and (not buckets or min(buckets) < 1):
            raise ValueError(f"buckets must be sizes >= 1, got {buckets}")
        if graphs and compile != "off":
            raise ValueError("graphs (CUDA graphs) and compile are exclusive; set one")
        if graphs and buckets is None:
            buckets = DEFAULT_BUCKETS
        self.model, self.size, self.device = model.eval(), image_size, torch.device(device)
        self.T, self.spacing_s, self.clock = model.num_frames, spacing_s, clock
        self.precision, self.buckets = precision, tuple(buckets) if buckets else None
        self.carry_cfg, self.cache_dtype, self.keep_inputs = carry or CarryConfig(), \
            cache_dtype, keep_inputs
        self._audio_period_ns = None if audio_rate_hz is None else round(1e9 / audio_rate_hz)
        self.preprocess = Preprocessor(image_size, self.device)
        self._silence = torch.full((1, 1, EXAMPLE_FRAMES, MEL_BANDS), SILENCE_LOGMEL,
                                   device=self.device)
        self.horizon_s = (self.T - 1) * spacing_s + 0.5
        self.retain_s = min(0.1, spacing_s / 4)
        self.slots = ring_slots(self.horizon_s, self.retain_s)
        if channels_last is None:
            channels_last = graphs and self.device.type == "cuda"
        if channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.graphs, self.channels_last = graphs, channels_last
        self.tables = self._probe_tables(max(1, streams), encode)
        self.steps_fn: StepVariants | GraphedSteps
        if graphs:
            self.steps_fn = GraphedSteps({embed: StaticStep(model, self.tables, self.carry_cfg,
                                                            embed, encode, static=True)
                                          for embed in (True, False)}, self._autocast,
                                         channels_last)
        else:
            # Ahead of time in another process on the CPU in fp32 (stream.engine.aot); else
            # torch.compile in this process.
            aot = self.device.type == "cpu" and precision == "fp32" and encode is None
            self.steps_fn = StepVariants(model, self.tables, self.carry_cfg, encode, compile,
                                         self._autocast, aot=aot)
        # Host buffers of the batches in flight: pinned with an event each on CUDA.
        self.staging = HostRing(2, pinned=self.device.type == "cuda")
        self.states: list[StreamState] = []
        self.steps = self.rows = self.padded_rows = 0

    def _autocast(self) -> Any:
        # No weight-cast cache: a step uses each weight once, and casts cached while a CUDA
        # graph is captured would be freed at autocast's exit while the graph still reads them.
        return torch.autocast(self.device.type, torch.bfloat16,
                              enabled=self.precision == "bf16", cache_enabled=False)

    @torch.inference_mode()
    def _probe_tables(self, streams: int, encode: Callable[[Tensor, Tensor], FrameFeatures]
                      | None) -> DeviceTables:
        """Device tables for ``streams`` streams, shaped by one encode of a blank frame."""
        x = torch.zeros(1, 3, self.size, self.size, device=self.device)
        with self._autocast():
            emb = self.model.embed_audio(self._silence)                     # (1, D)
            probe = (encode or self.model.encode_frames)(x, emb)
        return DeviceTables(probe, emb, x, streams, self.slots, self.cache_dtype)

    def new_stream(self) -> StreamState:
        """State for one more stream (the device tables grow when they are full)."""
        row = len(self.states)
        if row >= self.tables.streams:
            self.tables.grow(2 * self.tables.streams)
            self.steps_fn.tables_changed()
        index = WindowIndex(self.slots, self.horizon_s, self.retain_s, self.T, self.spacing_s)
        state = StreamState(row, index, self.carry_cfg, self.keep_inputs)
        self.states.append(state)
        return state

    def audio_input(self, logmel: object) -> Tensor:
        """(96, 64) log-mel window -> (1, 1, 96, 64) on the device; None -> silence."""
        if logmel is None:
            return self._silence
        return torch.as_tensor(logmel, dtype=torch.float32).to(self.device)[None, None]

    def feature_bytes_per_stream(self) -> int:
        """Device bytes of one stream's feature ring."""
        return self.tables.bytes_per_stream()

    # -- the step -------------------------------------------------------------------------------
    def step(self, items: Sequence[tuple[StreamState, PairedFrame]]) -> list[EngineResult]:
        """:meth:`step_device` on frames in host memory, masks back to the host (waits once
        per batch). Frames and log-mel windows go through a :class:`HostRing` slot (pinned,
        ``non_blocking`` copies on CUDA), masks and keep ratios come back through it, and the
        host waits on the slot's one event, not on a copy per stream."""
        if not items:
            return []
        slot = self.staging.acquire()
        batch = []
        for i, (state, paired) in enumerate(items):
            image = slot.upload(f"image{i}", paired.frame.image, self.device)   # (H, W, 3) u8
            mel = None
            if paired.logmel is not None:
                mel = slot.upload(f"mel{i}", np.asarray(paired.logmel, np.float32)[None, None],
                                  self.device)                            # (1, 1, 96, 64)
            batch.append(BatchItem(state, paired, image, mel))
        results = self.step_device(batch)
        probs = [slot.download(f"prob{i}", r.prob) for i, r in enumerate(results)]  # (H, W)
        keeps = [slot.download(f"keep{i}", r.keep_ratio.float().reshape(()))
                 for i, r in enumerate(results)]
        slot.record()
        slot.wait()
        end = self.clock()
        return [EngineResult(prob.numpy().copy(), r.logits, float(keep), r.window,
                             {**r.times_ns, "decode_end": end})
                for r, prob, keep in zip(results, probs, keeps, strict=True)]

    def step_device(self, items: Sequence[BatchItem]) -> list[DeviceResult]:
        """One batched step; results (one per item, in order) stay on the device. A step that
        raises changes no stream's state."""
        if not items:
            return []
        if len({id(it.state) for it in items}) != len(items):
            raise ValueError("a batch holds at most one frame per stream")
        with torch.inference_mode(), self._autocast():
            return self._step(items)

    def _step(self, items: Sequence[BatchItem]) -> list[DeviceResult]:
        N = len(items)
        P = pad_to(N, self.buckets)
        times = {"preprocess_start": self.clock()}
        x = torch.cat([self.preprocess(it.paired.frame.image if it.image is None else it.image)
                       for it in items])                                    # (N, 3, S, S)
        mels = [self.audio_input(it.paired.logmel) if it.audio is None else it.audio
                for it in items]                                            # N x (1, 1, 96, 64)
        times["encode_start"] = self.clock()
        plans = [it.state.index.plan(it.paired.frame.t_capture_ns, it.paired.frame.index)
                 for it in items]
        refresh = [it.state.refresh_due() for it in items]
        reuse = [it.state.reuse_due(it.paired.frame.t_capture_ns, self._audio_period_ns)
                 for it in items]
        control = self._control(items, plans, refresh, reuse, P)            # (P, T + 4)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits, keep = self.steps_fn(P, not all(reuse))(
            _pad_rows(x, P), _pad_rows(torch.cat(mels), P), control)
        # One step does audio, encode and decode: "encode" times the whole model step and
        # "decode" the rest (upsampling to each frame's size; on a GPU, queueing it).
        times["decode_start"] = self.clock()
        results = []
        for i, it in enumerate(items):
            it.state.commit(plans[i], it.paired.frame.t_capture_ns, refresh[i], reuse[i],
                            (x[i:i + 1], mels[i]))
            row = logits[i:i + 1].float()                                   # (1, K, S, S)
            prob = frame_prob(row, *it.paired.frame.image.shape[:2])        # (H, W)
            results.append(DeviceResult(prob, row, keep[i], list(plans[i].frames),
                                        dict(times)))
        end = self.clock()  # host time: kernels may still run on a GPU
        for r in results:
            r.times_ns["decode_end"] = end
        self.steps, self.rows, self.padded_rows = self.steps + 1, self.rows + N, \
            self.padded_rows + P - N
        return results

    def _control(self, items: Sequence[BatchItem], plans: list[Plan], refresh: list[bool],
                 reuse: list[bool], P: int) -> Tensor:
        """(P, T + 4) int64 control rows (see :mod:`stream.engine.static`). A padded row (its
        input a copy of the last real row's) writes to the trash slot and the trash stream row
        and reads the last real row's window, so it computes what that row computes and the
        batch-wide QSCA path choice is the unpadded batch's."""
        tb, T = self.tables, self.T
        rows = []
        for it, plan, fresh, again in zip(items, plans, refresh, reuse, strict=True):
            base = it.state.row * tb.slots
            rows.append([base + plan.write, *(base + s for s in plan.window), it.state.row,
                         int(fresh), int(again)])
        rows += [[tb.trash_slot, *rows[-1][1:T + 1], tb.trash_stream, 1, 0]] * (P - len(items))
        return torch.tensor(rows, dtype=torch.int64).to(self.device, non_blocking=True)
