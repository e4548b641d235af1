"""Accuracy on the live demo scene: the streaming engine offline over DemoScene frames, scored
against the object really sounding.

A frame is "settled" when it is 1.1 s or more into a sounding segment, so its whole 0.975 s
audio window holds the new sound (the first second after a change is ambiguous by
construction); :func:`scene_iou` scores only those. Used by ``calib.budget`` (accuracy of each
candidate setting) and ``bench/carry.py``. Frames as far into a silent segment are "silent":
they are not scored by IoU (an empty prediction and an empty truth say nothing);
:func:`scene_scores` reports the mean predicted mask area over them instead.

``audio_shift_ms`` ends every frame's audio window that much before its capture time, as
``live.sync.pairing: latest`` does when the audio lags; the frames scored do not change with
it. The CLI compares shifts::

    python -m calib.scene_eval --shifts-ms 0,10,20,40,100 --seeds 0,1,2,3,4,5,6,7
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from calib.fragment import output_problem
from pcmanet.audio import log_mel
from pcmanet.cli import Parser
from pcmanet.data.synthetic_demo import SILENCE_PROB, DemoScene
from stream.buffers.frames import Frame, PairedFrame
from stream.engine.engine import EngineResult, StreamingEngine

NS = 1_000_000_000
AUDIO_WINDOW = 15_600  # samples behind one 96-frame log-mel window
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class SceneFrame:
    paired: PairedFrame     # frame i stamped i / fps with the audio window ending at it (- shift)
    truth: np.ndarray       # (H, W) bool: the sounding object's pixels
    settled: bool           # scored (see the module docstring)
    silent: bool = False    # 1.1 s or more into silence: its area is reported


def scene_frames(scene: DemoScene, indices: Iterable[int], audio_shift_ms: float = 0.0
                 ) -> Iterator[SceneFrame]:
    """The scene's frames ``indices`` (frame i at i / fps s), paired with the audio window
    ending ``audio_shift_ms`` before them (None before a whole window exists)."""
    shift = round(audio_shift_ms * SAMPLE_RATE / 1000)  # samples
    for i in indices:
        image, gt, _ = scene.frame(i)
        end = scene.frame_sample(i)
        audio_end = end - shift
        mel = (log_mel(scene.audio(audio_end - AUDIO_WINDOW, AUDIO_WINDOW), SAMPLE_RATE)[0, 0]
               .numpy() if audio_end >= AUDIO_WINDOW else None)
        seg = scene.segment_at(max(end - 1, 0))
        long_enough = end - seg.start >= 1.1 * SAMPLE_RATE
        t = round(i * NS / scene.fps)
        t_end = t - shift * NS // SAMPLE_RATE
        yield SceneFrame(PairedFrame(Frame(image, t, i), mel, t_end - 975_000_000, t_end, False,
                                     audio_lag_ns=t - t_end), gt > 127,
                         seg.obj is not None and long_enough, seg.obj is None and long_enough)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Binary IoU; 1.0 when both are empty."""
    union = int((pred | truth).sum())
    return float((pred & truth).sum() / union) if union else 1.0


@dataclass
class SceneRun:
    """Per-frame results of :func:`scene_run`, in order (seed by seed, frame by frame)."""

    ious: list[float] = field(default_factory=list)       # IoU with the sounding object
    settled: list[bool] = field(default_factory=list)     # scored by scene_iou
    silent: list[bool] = field(default_factory=list)      # 1.1 s or more into silence
    areas: list[float] = field(default_factory=list)      # predicted mask area (fraction)
    sounding: list[bool] = field(default_factory=list)    # some object sounds (truth not empty)
    masks: list[np.ndarray] = field(default_factory=list)  # (H, W) bool predictions

    def mean(self, which: Sequence[bool]) -> float:
        picked = [v for v, keep in zip(self.ious, which, strict=True) if keep]
        return float(np.mean(picked)) if picked else float("nan")


def scene_run(make_engine: Callable[[], StreamingEngine], seeds: Sequence[int] = (0, 1, 2),
              seconds: float = 9.0, fps: float = 10.0, size: int = 224,
              on_step: Callable[[EngineResult], None] | None = None,
              audio_shift_ms: float = 0.0, keep_masks: bool = False,
              silence_prob: float = SILENCE_PROB) -> SceneRun:
    """Every frame of each seed's scene through a fresh engine per seed. ``silence_prob``: the
    scene's chance of a silent segment (:class:`DemoScene`'s)."""
    run = SceneRun()
    for seed in seeds:
        engine = make_engine()
        scene = DemoScene(seed=seed, size=size, fps=fps, silence_prob=silence_prob)
        for f in scene_frames(scene, range(round(seconds * fps)), audio_shift_ms):
            r = engine.step(f.paired)
            if on_step is not None:
                on_step(r)
            pred = r.prob > 0.5
            run.ious.append(iou(pred, f.truth))
            run.settled.append(f.settled)
            run.silent.append(f.silent)
            run.areas.append(float(pred.mean()))
            run.sounding.append(bool(f.truth.any()))
            if keep_masks:
                run.masks.append(pred)
    return run


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
    """IoU on the settled frames and predicted area on the silent frames of each seed's scene
    (a fresh engine per seed)."""
    run = scene_run(make_engine, seeds, seconds, fps, size, on_step, silence_prob=silence_prob)
    areas = [a for a, s in zip(run.areas, run.silent, strict=True) if s]
    return SceneScores(run.mean(run.settled), float(np.mean(areas)) if areas else float("nan"),
                       sum(run.settled), len(areas))


def scene_iou(make_engine: Callable[[], StreamingEngine], seeds: Sequence[int] = (0, 1, 2),
              seconds: float = 9.0, fps: float = 10.0, size: int = 224,
              on_step: Callable[[EngineResult], None] | None = None,
              audio_shift_ms: float = 0.0) -> float:
    """Mean IoU over the settled frames of each seed's scene (a fresh engine per seed)."""
    run = scene_run(make_engine, seeds, seconds, fps, size, on_step, audio_shift_ms)
    return run.mean(run.settled)


# -- CLI: the effect of an audio shift ---------------------------------------------------------


@dataclass(frozen=True)
class ShiftRow:
    shift_ms: float
    settled_iou: float      # mean IoU with the sounding object, settled frames
    sounding_iou: float     # mean IoU with the sounding object, every frame where one sounds
    agreement: float        # mean IoU of the masks with those at the first shift, every frame
    min_agreement: float    # the lowest of those
    changed: int            # frames whose mask agrees < 0.99 with the first shift's
    changed_settled: int    # ... of them settled (scored by scene_iou)
    frames: int


def compare_shifts(make_engine: Callable[[], StreamingEngine], shifts_ms: Sequence[float],
                   seeds: Sequence[int], seconds: float, fps: float) -> list[ShiftRow]:
    """One :func:`scene_run` per shift; masks compared frame by frame with the first shift's."""
    rows, base = [], None
    for shift in shifts_ms:
        run = scene_run(make_engine, seeds, seconds, fps, audio_shift_ms=shift, keep_masks=True)
        base = base or run
        agree = [iou(a, b) for a, b in zip(run.masks, base.masks, strict=True)]
        rows.append(ShiftRow(shift, run.mean(run.settled), run.mean(run.sounding),
                             float(np.mean(agree)), float(np.min(agree)),
                             sum(a < 0.99 for a in agree),
                             sum(a < 0.99 and s for a, s in zip(agree, run.settled, strict=True)),
                             len(agree)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m calib.scene_eval",
                                description="Demo-scene IoU with the audio window shifted "
                                            "earlier (live.sync.pairing: latest)")
    p.add_argument("--weights", help="checkpoint (default: the demo model)")
    p.add_argument("--shifts-ms", default="0,10,20,40,100",
                   help="window end before the capture time, ms; the first is the reference")
    p.add_argument("--seeds", default="0,1,2", help="demo scenes, e.g. 0,1,2,3")
    p.add_argument("--seconds", type=float, default=9.0)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="write the rows as JSON")
    args = p.parse_args(argv)
    try:
        shifts = [float(v) for v in args.shifts_ms.split(",")]
    except ValueError:
        p.error(f"--shifts-ms {args.shifts_ms}: comma-separated numbers (ms), e.g. 0,10,20")
    try:
        seeds = [int(v) for v in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {args.seeds}: comma-separated integers, e.g. 0,1,2")
    if not 2 <= args.seconds < 3600:
        p.error(f"--seconds {args.seconds:g}: a scene lasts 2 s to an hour")
    if not 1 <= args.fps <= 240:
        p.error(f"--fps {args.fps:g}: must be between 1 and 240")
    if args.threads < 1:
        p.error(f"--threads {args.threads}: must be >= 1")
    if args.weights and not Path(args.weights).is_file():
        p.error(f"--weights {args.weights}: no such file")
    if (problem := output_problem(args.json)) is not None:
        p.error(problem)
    import torch

    from pcmanet.assets import DEMO_CHECKPOINT
    from pcmanet.checkpoint import CheckpointError, load_checkpoint

    torch.set_num_threads(args.threads)
    try:
        model, _cfg, extra = load_checkpoint(args.weights or DEMO_CHECKPOINT)
    except CheckpointError as e:
        p.exit(2, f"error: {e}\n")
    size = extra["data"]["image_size"]
    t0 = time.monotonic()
    rows = compare_shifts(lambda: StreamingEngine(model, size), shifts, seeds, args.seconds,
                          args.fps)
    print(f"demo scene seeds {args.seeds}, {args.seconds:g} s at {args.fps:g} FPS, "
          f"{rows[0].frames} frames per shift ({time.monotonic() - t0:.0f} s)")
    print("shift ms  settled IoU  sounding IoU  agreement (mean / min)  frames changed "
          "(settled)")
    for r in rows:
        print(f"{r.shift_ms:8g}  {r.settled_iou:11.4f}  {r.sounding_iou:12.4f}  "
              f"{r.agreement:9.4f} / {r.min_agreement:.4f}  {r.changed:6d} of {r.frames} "
              f"({r.changed_settled})")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
