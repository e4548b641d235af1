"""Accuracy on the live demo scene: the streaming engine offline over DemoScene frames, scored
against the object really sounding.

A frame is scored when it is "settled": 1.1 s or more into a sounding segment, so its whole
0.975 s audio window holds the new sound (the first second after a change is ambiguous by
construction). Used by ``calib.budget`` (accuracy of each candidate setting) and
``bench/carry.py``. Frames as far into a silent segment are "silent": they are not scored by
IoU (an empty prediction and an empty truth say nothing), :func:`scene_scores` reports the mean
predicted mask area over them instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pcmanet.audio import log_mel
from pcmanet.data.synthetic_demo import SILENCE_PROB, DemoScene
from stream.engine import EngineResult, StreamingEngine
from stream.frames import Frame, PairedFrame

NS = 1_000_000_000
AUDIO_WINDOW = 15_600  # samples behind one 96-frame log-mel window
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class SceneFrame:
    paired: PairedFrame     # frame i stamped i / fps with the audio window ending at it
    truth: np.ndarray       # (H, W) bool: the sounding object's pixels
    settled: bool           # scored (see the module docstring)
    silent: bool = False    # 1.1 s or more into silence: its area is reported


def scene_frames(scene: DemoScene, indices: Iterable[int]) -> Iterator[SceneFrame]:
    """The scene's frames ``indices`` (frame i at i / fps s), paired with their audio
    (None before a whole window exists)."""
    for i in indices:
        image, gt, _ = scene.frame(i)
        end = scene.frame_sample(i)
        mel = (log_mel(scene.audio(end - AUDIO_WINDOW, AUDIO_WINDOW), SAMPLE_RATE)[0, 0].numpy()
               if end >= AUDIO_WINDOW else None)
        seg = scene.segment_at(max(end - 1, 0))
        long_enough = end - seg.start >= 1.1 * SAMPLE_RATE
        t = round(i * NS / scene.fps)
        yield SceneFrame(PairedFrame(Frame(image, t, i), mel, t - 975_000_000, t, False),
                         gt > 127, seg.obj is not None and long_enough,
                         seg.obj is None and long_enough)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Binary IoU; 1.0 when both are empty."""
    union = int((pred | truth).sum())
    return float((pred & truth).sum() / union) if union else 1.0


@dataclass(frozen=True)
class SceneScores:
    """:func:`scene_scores`: mean IoU over the settled frames, mean predicted area (fraction
    of the frame) over the silent ones, and how many of each (NaN where none)."""

    iou: float
    silent_area: float
    settled_frames: int
    silent_frames: int


def scene_scores(make_engine: Callable[[], StreamingEngine], seeds: Sequence[int] = (0, 1, 2),
                 seconds: float = 9.0, fps: float = 10.0, size: int = 224,
                 on_step: Callable[[EngineResult], None] | None = None,
                 silence_prob: float = SILENCE_PROB) -> SceneScores:
    """Each seed's scene (a fresh engine per seed) through the engine: IoU on the settled
    frames, predicted area on the silent frames. ``silence_prob``: the scene's chance of a
    silent segment (:class:`DemoScene`'s)."""
    scores, areas = [], []
    for seed in seeds:
        engine = make_engine()
        scene = DemoScene(seed=seed, size=size, fps=fps, silence_prob=silence_prob)
        for f in scene_frames(scene, range(round(seconds * fps))):
            r = engine.step(f.paired)
            if on_step is not None:
                on_step(r)
            if f.settled:
                scores.append(iou(r.prob > 0.5, f.truth))
            elif f.silent:
                areas.append(float((r.prob > 0.5).mean()))
    return SceneScores(float(np.mean(scores)) if scores else float("nan"),
                       float(np.mean(areas)) if areas else float("nan"), len(scores), len(areas))


def scene_iou(make_engine: Callable[[], StreamingEngine], seeds: Sequence[int] = (0, 1, 2),
              seconds: float = 9.0, fps: float = 10.0, size: int = 224,
              on_step: Callable[[EngineResult], None] | None = None) -> float:
    """Mean IoU over the settled frames of each seed's scene (a fresh engine per seed)."""
    return scene_scores(make_engine, seeds, seconds, fps, size, on_step).iou
