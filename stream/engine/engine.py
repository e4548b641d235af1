"""The streaming engine (docs/design.md 5): per-frame features once, decode of the newest.

Per frame, :meth:`StreamingEngine.step` runs

1. preprocessing (uint8 BGR -> normalised model input, :class:`Preprocessor`),
2. ``model.encode_frames`` on the new frame and its log-mel window (backbone, lateral convs,
   AVGA, QSCA tokens and keys/values); its keys/values and audio token go into the stream's
   feature ring (:mod:`stream.engine.ring`),
3. ``model.decode_rows`` of the newest frame over the window of T ring slots chosen by
   :func:`stream.buffers.sync.window_indices` (1 s apart by default): the audio-token chain,
   the newest frame's selected queries, GF and the heads.

Steps 2-3 are one :class:`~stream.engine.static.StaticStep`, eager or compiled.

**Contract**: the newest frame's logits equal what clip mode (``model(frames, audio)`` on the
same T frames and log-mel windows) computes for it, within 1e-4 (tested).

With :class:`CarryConfig` ``enabled``, CIM masks are carried across frames (device tables
of the static step): a token of the new frame is computed as a query only where the frame's own
CIM mask says so *and* it was uncertain in the previous frame or its pixels changed; a full
refresh (the plain selection) happens every ``refresh_every`` frames and whenever the audio
embedding moves (a new sound). This trades exactness for fewer query tokens; the clip-mode
contract holds with carry-over off.

The streaming path is :class:`stream.engine.batch.BatchedEngine` with a batch of one: this
engine holds one :class:`~stream.engine.batch.StreamState` (cache, carry, audio reuse); the
multi-stream pipeline batches many. Clip mode (the reference, for comparison) stays here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from pcmanet.model import PCMANet, PCMANetOutput, keep_fraction
from stream.buffers.frames import PairedFrame
from stream.engine.batch import BatchedEngine, BatchItem, StreamState
from stream.engine.cuda_graphs import GraphedSteps
from stream.engine.parts import (  # noqa: F401  (re-exported: the engine's public names)
    SILENCE_LOGMEL,
    CarryConfig,
    DeviceResult,
    EngineResult,
    foreground_prob,
    frame_prob,
)
from stream.engine.ring import WindowIndex


class StreamingEngine:
    """Segments each new frame with the T-frame window from cached per-frame features.

    Args:
        model: a PCMANet in eval mode whose audio encoder takes log-mel examples.
        image_size: model input side S.
        device: where the model runs.
        spacing_s: time between window frames (training: 1 s).
        carry: CIM carry-over settings (default: off, reference selection).
        cache_dtype: feature ring storage dtype (None: as computed).
        keep_inputs: keep the held frames' inputs (needed by :meth:`clip_logits`).
        clock: stamps stage times.
        mode: "stream" (cached features, newest frame decoded) or "clip" (the reference way,
            for comparison: every step re-runs the whole model on the T frames of the window
            from their cached inputs; implies ``keep_inputs``).
        audio_rate_hz: recompute the audio embedding at most this often (by capture time) and
            reuse the last one in between; None: every frame (the reference). Streaming only.
        precision: "fp32", or "bf16" (the model under ``torch.autocast`` in bfloat16 on the
            engine's device; probabilities are returned in float32).
        cuda_graphs: replay the static step from a CUDA graph per batch bucket (CUDA devices
            only; :mod:`stream.engine.cuda_graphs`).
        compile: the static step eager ("off"), compiled ("on") or compiled where it works
            ("auto"); :mod:`stream.engine.compiled`.
    """

    def __init__(self, model: PCMANet, image_size: int, device: torch.device | str = "cpu",
                 spacing_s: float = 1.0, carry: CarryConfig | None = None,
                 cache_dtype: torch.dtype | None = None, keep_inputs: bool = False,
                 clock: Callable[[], int] = time.monotonic_ns, mode: str = "stream",
                 audio_rate_hz: float | None = None, precision: str = "fp32",
                 cuda_graphs: bool = False, compile: str = "off") -> None:
        if cuda_graphs and torch.device(device).type != "cuda":
            raise ValueError("cuda_graphs needs a CUDA device (engine device is "
                             f"{torch.device(device)})")
        if mode not in ("stream", "clip"):
            raise ValueError(f"mode must be 'stream' or 'clip', got {mode!r}")
        self.mode = mode
        # The streaming path is the batched engine's, with a batch of one (this stream).
        self.batch = BatchedEngine(model, image_size, device, spacing_s=spacing_s, carry=carry,
                                   cache_dtype=cache_dtype,
                                   keep_inputs=keep_inputs or mode == "clip", clock=clock,
                                   audio_rate_hz=audio_rate_hz, precision=precision,
                                   compile=compile if mode == "stream" else "off",
                                   graphs=cuda_graphs and mode == "stream")
        self.state: StreamState = self.batch.new_stream()
        self.model, self.size, self.device = self.batch.model, image_size, self.batch.device
        self.T, self.spacing_s, self.clock = model.num_frames, spacing_s, clock
        self.precision, self.preprocess = precision, self.batch.preprocess
        self.frames = 0

    @property
    def graphs(self) -> GraphedSteps | None:
        """The step's CUDA graphs (``cuda_graphs``), else None."""
        steps = self.batch.steps_fn
        return steps if isinstance(steps, GraphedSteps) else None

    @property
    def cache(self) -> WindowIndex:
        """The stream's ring index (held frames, inserted, evicted)."""
        return self.state.cache

    @property
    def audio_embeddings(self) -> int:
        """Audio encoder runs."""
        return self.state.audio_embeddings

    def audio_input(self, logmel: np.ndarray | None) -> Tensor:
        """(96, 64) log-mel window -> (1, 1, 96, 64) on the device; None -> silence."""
        return self.batch.audio_input(logmel)

    def step_device(self, paired: PairedFrame, image: Tensor | None = None,
                    audio: Tensor | None = None) -> DeviceResult:
        """Encode the new frame, cache it, decode it over its window; results stay on the
        device and nothing waits for the device (no host synchronisation on CUDA).

        image: the frame as a (H, W, 3) uint8 tensor already on the device (e.g. copied from
            a pinned buffer); None: ``paired.frame.image`` is copied here.
        audio: (1, 1, 96, 64) log-mel on the device; None: from ``paired.logmel``.
        """
        self.frames += 1
        if self.mode == "stream":
            return self.batch.step_device([BatchItem(self.state, paired, image, audio)])[0]
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            return self._clip_step(paired, image, audio)

    def _clip_step(self, paired: PairedFrame, image: Tensor | None,
                   audio: Tensor | None) -> DeviceResult:
        """The reference way: the whole window through the model, from the held frames'
        inputs (timed as "encode"; "decode" is then ~0)."""
        times = {"preprocess_start": self.clock()}
        frame = paired.frame
        x = self.preprocess(frame.image if image is None else image)       # (1, 3, S, S)
        mel = self.audio_input(paired.logmel) if audio is None else audio   # (1, 1, 96, 64)
        times["encode_start"] = self.clock()
        plan = self.state.index.plan(frame.t_capture_ns, frame.index)
        self.state.commit(plan, frame.t_capture_ns, True, False, (x, mel))
        out = self._clip_forward()
        times["decode_start"] = self.clock()
        out = PCMANetOutput([lg[-1:] for lg in out.logits], out.keep_ratios,
                            [m[-1:] for m in out.masks], [m[-1:] for m in out.uncertain])
        logits = out.logits[0].float()                                      # (1, K, S, S)
        prob = frame_prob(logits, *frame.image.shape[:2])                   # (H, W)
        times["decode_end"] = self.clock()
        return DeviceResult(prob, logits, keep_fraction(out), list(plan.frames), times)

    def step(self, paired: PairedFrame) -> EngineResult:
        """:meth:`step_device`, then the mask to the host (waits for the device). Streaming:
        the batched engine's staged step (pinned buffers on CUDA, :meth:`BatchedEngine.step`)."""
        if self.mode == "stream":
            self.frames += 1
            return self.batch.step([(self.state, paired)])[0]
        return self.step_device(paired).to_host(self.clock)

    @torch.inference_mode()
    def clip_logits(self) -> Tensor:
        """Clip mode on the newest frame's window: re-encode all T frames from their held
        inputs and decode them all -> the newest frame's logits (1, K, S, S). Needs
        ``keep_inputs``."""
        return self._clip_forward().logits[0][-1:]

    def _clip_forward(self) -> PCMANetOutput:
        """The whole model on the last window's inputs (T, 3, S, S) and (T, 1, 96, 64), as
        one clip of T frames."""
        if not self.state.keep_inputs:
            raise RuntimeError("clip mode needs the engine built with keep_inputs=True")
        inputs = [self.state.inputs[s] for s in self.state.window]
        frames = torch.cat([x for x, _ in inputs])
        mels = torch.cat([m for _, m in inputs])
        return self.model(frames, mels)  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        return {**self.state.stats(), "frames": self.frames}
