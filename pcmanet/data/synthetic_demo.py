"""The continuous synthetic scene for the live demo, and a writer for it as an mp4 with sound.

:class:`DemoScene` uses the data set's object classes, sounds and renderer
(:mod:`pcmanet.data.synthetic_scene`), so a model trained on ``python -m pcmanet.data.synthetic``
data segments it. 2-4 objects drift continuously, one per cell of a 2 x 2 grid; the sounding
object changes every 3-5 s, sometimes to silence (background noise only). Everything is a pure
function of the seed and the frame or sample index: any chunking of :meth:`DemoScene.audio`
gives the same samples, and the same seed gives the same frames.

``python -m pcmanet.data.synthetic_demo OUT.mp4 --seconds 20 [--silence-prob P]`` writes a demo
video (H.264 + AAC) and a JSON sidecar with the sounding object of every frame (null: silence);
``--silence-prob`` sets how often a segment after the first is silent (default 0.15; no two
silent segments follow each other, so 1 alternates sound and silence).
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcmanet.cli import Parser

from .media_writer import write_media
from .synthetic_classes import OBJECT_CLASSES
from .synthetic_scene import (
    ObjectInstance,
    random_background,
    render,
    sample_instance,
    sample_motion,
)
from .synthetic_sound import (
    PEAK,
    SAMPLE_RATE,
    background_noise,
    sample_noise_kind,
    synthesize,
)

_DEMO_KEY = 7_357  # separates the demo's random streams from the data set's
_NOISE_BLOCK = SAMPLE_RATE  # background noise: sine-windowed blocks of 2 x 1 s, 50 % overlap
_FADE = int(0.02 * SAMPLE_RATE)  # 20 ms fade in and out of each sounding segment
_CACHE = 8  # generated noise blocks / segments kept
SILENCE_PROB = 0.15  # default chance that a segment after the first is silent


@dataclass(frozen=True)
class Segment:
    """Samples [start, end) at 16 kHz during which object ``obj`` sounds (None: silence)."""

    start: int
    end: int
    obj: int | None


class DemoScene:
    """Endless seeded sounding-objects scene: frames (BGR), masks and 16 kHz mono audio.

    Thread-safe: a video thread may call :meth:`frame` while an audio thread calls :meth:`audio`.

    Args:
        seed: selects objects, background, motion, voices and the sounding timeline.
        size: frame side in pixels.
        fps: frame rate; frame ``i`` shows time ``i / fps`` s.
        num_objects: 1-4 (default: 2-4, drawn from the seed).
        segment_s: (min, max) seconds one object (or silence) lasts.
        silence_prob: probability that a segment after the first is silent (background noise
            only); never two silent segments in a row, so 1 alternates sound and silence.
        snr_db: sounding object : background noise.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, seed: int = 0, size: int = 224, fps: float = 30.0,
                 num_objects: int | None = None, segment_s: tuple[float, float] = (3.0, 5.0),
                 silence_prob: float = SILENCE_PROB, snr_db: float = 14.0) -> None:
        if num_objects is not None and not 1 <= num_objects <= 4:
            raise ValueError(f"num_objects must be in 1..4, got {num_objects}")
        if fps <= 0 or size < 16 or not 0 < segment_s[0] <= segment_s[1]:
            raise ValueError(f"bad fps={fps}, size={size} or segment_s={segment_s}")
        if not 0 <= silence_prob <= 1:
            raise ValueError(f"silence_prob must be in [0, 1], got {silence_prob}")
        self.seed, self.size, self.fps = seed, size, fps
        self.segment_s, self.silence_prob = segment_s, silence_prob
        rng = np.random.default_rng([seed, _DEMO_KEY])
        k = num_objects or int(rng.integers(2, 5))
        classes = rng.choice(len(OBJECT_CLASSES), k, replace=False)
        cells = rng.permutation(4)[:k]  # one object per cell of a 2 x 2 grid: no occlusion
        self.background = random_background(size, rng)  # (H, W, 3) uint8 BGR
        self.objects: tuple[ObjectInstance, ...] = tuple(
            sample_instance(OBJECT_CLASSES[int(c)], sample_motion(
                rng, (0.27 + 0.46 * (cell % 2) + rng.uniform(-0.02, 0.02),
                      0.27 + 0.46 * (cell // 2) + rng.uniform(-0.02, 0.02)),
                float(rng.uniform(0.1, 0.13)), 0.06, freq=(0.05, 0.2)), rng)
            for c, cell in zip(classes, cells))
        # Levels as in the data set: each object peaks mid-range of PEAK, noise snr_db below.
        ref = [synthesize(o.cls.sound, o.voice, 5 * SAMPLE_RATE, np.random.default_rng(0))
               for o in self.objects]
        target = sum(PEAK) / 2
        self._gains = [target / float(np.abs(r).max()) for r in ref]  # unit RMS -> level
        self._noise_rms = float(np.mean(self._gains)) / 10 ** (snr_db / 20)
        self._noise_kind = sample_noise_kind(rng)
        self._segments: list[Segment] = []
        self._starts: list[int] = []
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.RLock()  # guards the lazily grown timeline and the cache

    # -- timeline ------------------------------------------------------------------------------

    def _extend(self, sample: int) -> None:
        with self._lock:
            self._extend_locked(sample)

    def _extend_locked(self, sample: int) -> None:
        while not self._segments or self._segments[-1].end <= sample:
            j = len(self._segments)
            rng = np.random.default_rng([self.seed, _DEMO_KEY, 1, j])
            start = self._segments[-1].end if j else 0
            end = start + round(rng.uniform(*self.segment_s) * SAMPLE_RATE)
            prev = self._segments[-1].obj if j else None
            obj: int | None = None
            if j == 0 or prev is None or rng.random() >= self.silence_prob:  # no 2 silences
                choices = [i for i in range(len(self.objects)) if i != prev] or [0]
                last = {seg.obj: n for n, seg in enumerate(self._segments)}  # latest wins
                wait = np.array([j - last.get(i, -1) for i in choices], float)
                obj = choices[int(rng.choice(len(choices), p=wait**2 / (wait**2).sum()))]
            self._segments.append(Segment(start, end, obj))
            self._starts.append(start)

    def segment_at(self, sample: int) -> Segment:
        """The segment holding audio sample ``sample`` (>= 0)."""
        self._extend(sample)
        return self._segments[bisect.bisect_right(self._starts, sample) - 1]

    def segments(self, end_sample: int) -> list[Segment]:
        """All segments that start before ``end_sample``."""
        self._extend(end_sample)
        return [s for s in self._segments if s.start < end_sample]

    def frame_sample(self, index: int) -> int:
        """Audio sample index at the time of frame ``index``."""
        return round(index * SAMPLE_RATE / self.fps)

    # -- video ---------------------------------------------------------------------------------

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray, str | None]:
        """Frame ``index`` -> (image (H, W, 3) uint8 BGR, mask (H, W) uint8 0/255 of the object
        sounding at that time, its class name or None during silence)."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        image, masks = render(self.background, self.objects, index / self.fps)
        obj = self.segment_at(self.frame_sample(index)).obj
        if obj is None:
            return image, np.zeros((self.size, self.size), np.uint8), None
        return image, masks[obj].astype(np.uint8) * 255, self.objects[obj].cls.name

    # -- audio ---------------------------------------------------------------------------------

    def _cached(self, key: tuple[str, int], make: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
                while len(self._cache) > 2 * _CACHE:
                    self._cache.popitem(last=False)
            return self._cache[key]

    def _noise_block(self, b: int) -> np.ndarray:
        """Noise block b (>= -1) covering samples [b L, b L + 2 L), sine-windowed (power sums
        to 1 where two blocks overlap)."""
        def make() -> np.ndarray:
            rng = np.random.default_rng([self.seed, _DEMO_KEY, 2, b + 1])
            n = 2 * _NOISE_BLOCK
            window = np.sin(math.pi * (np.arange(n) + 0.5) / n)
            return background_noise(n, rng, self._noise_kind) * window * self._noise_rms
        return self._cached(("noise", b), make)

    def _segment_audio(self, j: int) -> np.ndarray:
        seg = self._segments[j]

        def make() -> np.ndarray:
            n = seg.end - seg.start
            if seg.obj is None:
                return np.zeros(n)
            o = self.objects[seg.obj]
            rng = np.random.default_rng([self.seed, _DEMO_KEY, 3, j])
            sound = synthesize(o.cls.sound, o.voice, n, rng, t0=seg.start / SAMPLE_RATE)
            fade = np.minimum(1.0, np.minimum(np.arange(n) + 1, n - np.arange(n)) / _FADE)
            return sound * fade * self._gains[seg.obj]
        return self._cached(("segment", j), make)

    def audio(self, start_sample: int, num_samples: int) -> np.ndarray:
        """Samples [start, start + n) -> (n,) float32 mono in [-1, 1] at 16 kHz; the same samples
        for any chunking."""
        if start_sample < 0 or num_samples < 0:
            raise ValueError(f"need start_sample >= 0 and num_samples >= 0, got "
                             f"{start_sample}, {num_samples}")
        out = np.zeros(num_samples)
        if num_samples == 0:
            return out.astype(np.float32)
        end, L = start_sample + num_samples, _NOISE_BLOCK
        for b in range(start_sample // L - 1, (end - 1) // L + 1):  # blocks overlapping the range
            lo, hi = max(start_sample, b * L), min(end, b * L + 2 * L)
            if lo < hi:
                block = self._noise_block(b)  # covers [b L, b L + 2 L)
                out[lo - start_sample:hi - start_sample] += block[lo - b * L:hi - b * L]
        self._extend(end - 1)
        for j in range(bisect.bisect_right(self._starts, start_sample) - 1, len(self._segments)):
            seg = self._segments[j]
            if seg.start >= end:
                break
            lo, hi = max(start_sample, seg.start), min(end, seg.end)
            out[lo - start_sample:hi - start_sample] += \
                self._segment_audio(j)[lo - seg.start:hi - seg.start]
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def write_demo_video(path: str | Path, seconds: float, size: int = 224, fps: float = 30.0,
                     seed: int = 0, silence_prob: float = SILENCE_PROB) -> Path:
    """Write ``seconds`` of :class:`DemoScene` ``(seed, size, fps, silence_prob=...)`` as an mp4
    and a sidecar.

    Video: H.264 (libx264), yuv420p. Audio: AAC mono at 16 kHz (PCM s16le in a QuickTime
    container where FFmpeg has no AAC encoder). Sidecar ``path.with_suffix('.json')``: the scene
    parameters, the sounding segments and, per frame, its time and sounding class (masks: rebuild
    ``DemoScene(seed, size, fps)`` and call ``frame(i)``). Returns the sidecar path.
    """
    path = Path(path)
    scene = DemoScene(seed=seed, size=size, fps=fps, silence_prob=silence_prob)
    num_frames = round(seconds * fps)
    num_samples = round(seconds * SAMPLE_RATE)
    video_codec, audio_codec = write_media(path, lambda i: scene.frame(i)[0], scene.audio,
                                           num_frames, fps, (size, size), SAMPLE_RATE)
    frames_meta = []
    for i in range(num_frames):
        obj = scene.segment_at(scene.frame_sample(i)).obj
        frames_meta.append({"index": i, "t": round(i / fps, 6),
                            "sounding": None if obj is None else scene.objects[obj].cls.name})
    segments = [{"start_s": s.start / SAMPLE_RATE, "end_s": min(s.end, num_samples) / SAMPLE_RATE,
                 "sounding": None if s.obj is None else scene.objects[s.obj].cls.name}
                for s in scene.segments(num_samples)]
    meta = {"generator": "pcmanet.data.synthetic_demo", "video": path.name, "seed": seed,
            "size": size, "fps": fps, "seconds": seconds, "silence_prob": silence_prob,
            "sample_rate": SAMPLE_RATE,
            "video_codec": video_codec, "audio_codec": audio_codec,
            "objects": [o.cls.name for o in scene.objects], "segments": segments,
            "frames": frames_meta}
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps(meta, indent=1) + "\n")
    return sidecar


def main(argv: list[str] | None = None) -> int:
    """``python -m pcmanet.data.synthetic_demo OUT.mp4 [--seconds S --size N --fps F --seed S]``."""
    p = Parser(prog="python -m pcmanet.data.synthetic_demo",
                                description="Write the synthetic demo scene as an mp4 + JSON.")
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--silence-prob", type=float, default=SILENCE_PROB,
                   help=f"chance that a segment after the first is silent (default "
                        f"{SILENCE_PROB}; never two silent segments in a row)")
    args = p.parse_args(argv)
    if not 0 <= args.silence_prob <= 1:
        p.error(f"--silence-prob must be in [0, 1], got {args.silence_prob}")
    sidecar = write_demo_video(args.out, args.seconds, args.size, args.fps, args.seed,
                               args.silence_prob)
    print(f"wrote {args.out} and {sidecar}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
