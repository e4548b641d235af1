"""The streaming engine (DESIGN.md 5): per-frame features once, cross-frame decode of the newest.

Per frame, :meth:`StreamingEngine.step` runs

1. preprocessing (uint8 BGR -> normalised model input, :class:`Preprocessor`),
2. ``model.encode_frames`` on the new frame and its log-mel window (backbone, lateral convs,
   AVGA, QSCA tokens and keys/values), kept in :class:`FeatureCache`,
3. ``model.decode`` of the newest frame over the window of T cached frames chosen by
   :func:`stream.buffers.sync.window_indices` (1 s apart by default): the audio-token chain,
   the newest frame's selected queries, GF and the heads.

**Contract**: the newest frame's logits equal what clip mode (``model(frames, audio)`` on the
same T frames and log-mel windows) computes for it, within 1e-4 (tested).

With :class:`CarryConfig` ``enabled``, CIM masks are carried across frames
(:class:`CimCarry`): a token of the new frame is computed as a query only where the frame's own
CIM mask says so *and* it was uncertain in the previous frame or its pixels changed; a full
refresh (the plain selection) happens every ``refresh_every`` frames and whenever the audio
embedding moves (a new sound). This trades exactness for fewer query tokens; the clip-mode
contract holds with carry-over off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pcmanet.audio.frontend import EXAMPLE_FRAMES, MEL_BANDS
from pcmanet.model import FrameFeatures, PCMANet, PCMANetOutput, keep_fraction
from stream.buffers.frames import NS_PER_S, PairedFrame
from stream.buffers.sync import window_indices
from stream.engine.preprocess import Preprocessor

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


_EMPTY = FrameFeatures([], [], [], torch.empty(1, 0))  # clip mode caches inputs only


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


def foreground_prob(logits: Tensor) -> Tensor:
    """(F, K, H, W) logits -> (F, H, W) probability that a pixel is a sounding object:
    sigmoid for K = 1; 1 - P(background, class 0) for K > 1 (AVSS heads)."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return 1 - torch.softmax(logits, dim=1)[:, 0]


class StreamingEngine:
    """Segments each new frame with the T-frame window from cached per-frame features.

    Args:
        model: a PCMANet in eval mode whose audio encoder takes log-mel examples.
        image_size: model input side S.
        device: where the model runs.
        spacing_s: time between window frames (training: 1 s).
        carry: CIM carry-over settings (default: off, reference selection).
        cache_dtype: feature cache storage dtype (None: as computed).
        keep_inputs: keep inputs in the cache (needed by :meth:`clip_logits`).
        clock: stamps stage times.
        mode: "stream" (cached features, newest frame decoded) or "clip" (the reference way,
            for comparison: every step re-runs the whole model on the T frames of the window
            from their cached inputs; implies ``keep_inputs``).
        audio_rate_hz: recompute the audio embedding at most this often (by capture time) and
            reuse the last one in between; None: every frame (the reference). Streaming only.
        precision: "fp32", or "bf16" (the model under ``torch.autocast`` in bfloat16 on the
            engine's device; probabilities are returned in float32).
        cuda_graphs: replay the per-frame encoder from a CUDA graph (CUDA devices only;
            :mod:`stream.engine.cuda_graphs`).
    """

    def __init__(self, model: PCMANet, image_size: int, device: torch.device | str = "cpu",
                 spacing_s: float = 1.0, carry: CarryConfig | None = None,
                 cache_dtype: torch.dtype | None = None, keep_inputs: bool = False,
                 clock: Callable[[], int] = time.monotonic_ns, mode: str = "stream",
                 audio_rate_hz: float | None = None, precision: str = "fp32",
                 cuda_graphs: bool = False) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.precision = precision
        if cuda_graphs and torch.device(device).type != "cuda":
            raise ValueError("cuda_graphs needs a CUDA device (engine device is "
                             f"{torch.device(device)})")
        self._encode: Callable[[Tensor, Tensor], FrameFeatures] = model.encode_frames
        if cuda_graphs:
            from stream.engine.cuda_graphs import GraphedEncoder

            self._encode = GraphedEncoder(model)
        if mode not in ("stream", "clip"):
            raise ValueError(f"mode must be 'stream' or 'clip', got {mode!r}")
        if audio_rate_hz is not None and audio_rate_hz <= 0:
            raise ValueError(f"audio_rate_hz must be > 0 or None, got {audio_rate_hz}")
        self._audio_period_ns = None if audio_rate_hz is None else round(1e9 / audio_rate_hz)
        self._last_audio: tuple[int, Tensor] | None = None  # (capture ns, embedding (1, D))
        self.audio_embeddings = 0  # audio encoder runs
        self.mode = mode
        keep_inputs = keep_inputs or mode == "clip"
        if model.audio_encoder is None:
            raise ValueError("the streaming engine needs a model with an audio encoder "
                             "(log-mel input); load it with vggish=PATH or a light encoder")
        self.model, self.size, self.device = model.eval(), image_size, torch.device(device)
        self.T, self.spacing_s, self.clock = model.num_frames, spacing_s, clock
        self.preprocess = Preprocessor(image_size, self.device)
        horizon = (self.T - 1) * spacing_s + 0.5
        self.cache = FeatureCache(horizon, retain_s=min(0.1, spacing_s / 4),
                                  dtype=cache_dtype, keep_inputs=keep_inputs)
        self.carry = CimCarry(carry or CarryConfig())
        self._target = torch.tensor([self.T - 1], device=self.device)
        self._silence = torch.full((1, 1, EXAMPLE_FRAMES, MEL_BANDS), SILENCE_LOGMEL,
                                   device=self.device)
        self.frames = 0

    def audio_input(self, logmel: np.ndarray | None) -> Tensor:
        """(96, 64) log-mel window -> (1, 1, 96, 64) on the device; None -> silence."""
        if logmel is None:
            return self._silence
        return torch.as_tensor(logmel, dtype=torch.float32).to(self.device)[None, None]

    def step_device(self, paired: PairedFrame, image: Tensor | None = None,
                    audio: Tensor | None = None) -> DeviceResult:
        """Encode the new frame, cache it, decode it over its window; results stay on the
        device and nothing waits for the device (no host synchronisation on CUDA).

        image: the frame as a (H, W, 3) uint8 tensor already on the device (e.g. copied from
            a pinned buffer); None: ``paired.frame.image`` is copied here.
        audio: (1, 1, 96, 64) log-mel on the device; None: from ``paired.logmel``.
        """
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            return self._step_device(paired, image, audio)

    def _step_device(self, paired: PairedFrame, image: Tensor | None,
                     audio: Tensor | None) -> DeviceResult:
        times = {"preprocess_start": self.clock()}
        frame = paired.frame
        x = self.preprocess(frame.image if image is None else image)       # (1, 3, S, S)
        mel = self.audio_input(paired.logmel) if audio is None else audio   # (1, 1, 96, 64)
        times["encode_start"] = self.clock()
        if self.mode == "clip":  # the reference way: the whole window through the model
            self.cache.put(CacheEntry(frame.t_capture_ns, frame.index, _EMPTY, x, mel))
            entries = self.cache.window(self.T, self.spacing_s)
            out = self._clip_forward(entries)  # counted as "encode"; "decode" is then ~0
            times["decode_start"] = self.clock()
            out = PCMANetOutput([lg[-1:] for lg in out.logits], out.keep_ratios,
                                [m[-1:] for m in out.masks], [m[-1:] for m in out.uncertain])
        else:
            emb = self.audio_embedding(mel, frame.t_capture_ns)             # (1, D)
            feats = self._encode(x, emb)
            self.cache.put(CacheEntry(frame.t_capture_ns, frame.index, feats, x, mel))
            entries = self.cache.window(self.T, self.spacing_s)
            times["decode_start"] = self.clock()
            restrict = self.carry.restrict(x, feats.audio)
            out = self.model.decode(self.cache.features(entries), self._target,
                                    out_size=(self.size, self.size), restrict=restrict)
            self.carry.update(out.uncertain, x, feats.audio)
        logits = out.logits[0].float()                                      # (1, K, S, S)
        H, W = frame.image.shape[:2]
        full = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        prob = foreground_prob(full)[0].float()                             # (H, W)
        times["decode_end"] = self.clock()  # host time: kernels may still run on a GPU
        self.frames += 1
        return DeviceResult(prob, logits, keep_fraction(out), [e.frame_index for e in entries],
                            times)

    def audio_embedding(self, mel: Tensor, t_capture_ns: int) -> Tensor:
        """(1, 1, 96, 64) log-mel -> (1, D) embedding; with ``audio_rate_hz`` the last one is
        reused until a period has passed since it was computed."""
        last = self._last_audio
        if (last is not None and self._audio_period_ns is not None
                and 0 <= t_capture_ns - last[0] < self._audio_period_ns):
            return last[1]
        emb = self.model.embed_audio(mel)
        self._last_audio = (t_capture_ns, emb)
        self.audio_embeddings += 1
        return emb

    def step(self, paired: PairedFrame) -> EngineResult:
        """:meth:`step_device`, then the mask to the host (waits for the device)."""
        r = self.step_device(paired)
        prob = r.prob.cpu().numpy()
        keep = float(r.keep_ratio)
        r.times_ns["decode_end"] = self.clock()
        return EngineResult(prob, r.logits, keep, r.window, r.times_ns)

    @torch.inference_mode()
    def clip_logits(self) -> Tensor:
        """Clip mode on the newest frame's window: re-encode all T frames from their cached
        inputs and decode them all -> the newest frame's logits (1, K, S, S). Needs
        ``keep_inputs``."""
        entries = self.cache.window(self.T, self.spacing_s)
        return self._clip_forward(entries).logits[0][-1:]

    def _clip_forward(self, entries: list[CacheEntry]) -> PCMANetOutput:
        """The whole model on the entries' cached inputs (T, 3, S, S) and (T, 1, 96, 64), as
        one clip of T frames."""
        if any(e.image is None or e.audio is None for e in entries):
            raise RuntimeError("clip mode needs the engine built with keep_inputs=True")
        frames = torch.cat([e.image for e in entries])  # type: ignore[misc]
        mels = torch.cat([e.audio for e in entries])    # type: ignore[misc]
        return self.model(frames, mels)  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        return {"frames": self.frames, "audio_embeddings": self.audio_embeddings,
                **{f"cache_{k}": v for k, v in self.cache.stats().items()},
                "carry_refreshes": self.carry.scheduled_refreshes}
