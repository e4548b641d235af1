"""The flash-and-click pattern: white flashes on black, each with a click, at irregular intervals.

Play it on a screen and a speaker in front of the camera and microphone, record with
``run_live.py --camera 0 --mic default --record DIR``, then ``python -m calib.av_offset
--recording DIR``. Irregular intervals (``gap_s`` drawn per event) leave only one lag at which
flashes and clicks line up. ``shift_ms`` moves every click against its flash (a positive shift:
the click comes later), to test the estimator with a known answer.

    python -m calib.av_offset --write-pattern pattern.mp4 [--seconds 20] [--shift-ms 0]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pcmanet.data.media_writer import write_media

SAMPLE_RATE = 16_000


class FlashClickPattern:
    """Frames and audio of the pattern.

    Args:
        seconds: length.
        fps: frame rate; flashes start on frame boundaries.
        size: (H, W) of the frames.
        shift_ms: click time minus flash time.
        gap_s: (min, max) seconds between flashes.
        flash_frames: frames a flash lasts.
        seed: draws the gaps and the background noise.
    """

    def __init__(self, seconds: float = 20.0, fps: float = 30.0, size: tuple[int, int] = (240, 320),
                 shift_ms: float = 0.0, gap_s: tuple[float, float] = (0.7, 1.3),
                 flash_frames: int = 3, seed: int = 0) -> None:
        if not 0 < gap_s[0] <= gap_s[1] or flash_frames < 1 or seconds <= 0 or fps <= 0:
            raise ValueError(f"bad pattern: seconds={seconds}, fps={fps}, gap_s={gap_s}, "
                             f"flash_frames={flash_frames}")
        self.fps, self.size, self.shift_s = fps, size, shift_ms / 1000
        self.num_frames = round(seconds * fps)
        rng = np.random.default_rng(seed)
        starts, t = [], 0.5 + max(0.0, -self.shift_s)
        while t + flash_frames / fps + max(0.0, self.shift_s) < seconds - 0.3:
            starts.append(round(t * fps))
            t = (starts[-1] + flash_frames) / fps + rng.uniform(*gap_s)
        self.flash_starts = starts                                  # frame indices
        self.flash_frames = flash_frames
        self._lit = np.zeros(self.num_frames, bool)
        for k in starts:
            self._lit[k:k + flash_frames] = True
        n = round(self.num_frames / fps * SAMPLE_RATE)
        audio = (rng.standard_normal(n) * 0.003).astype(np.float32)  # -50 dBFS room noise
        click = self.click()
        for k in starts:
            at = round((k / fps + self.shift_s) * SAMPLE_RATE)
            end = min(at + len(click), n)
            audio[at:end] += click[:end - at]
        self.audio_samples = audio

    @staticmethod
    def click() -> np.ndarray:
        """A 30 ms click: a noise burst and a 2 kHz tone with a fast decay, peak ~0.8."""
        rng = np.random.default_rng(1)
        t = np.arange(round(0.03 * SAMPLE_RATE)) / SAMPLE_RATE
        env = np.exp(-t / 0.006)
        wave = 0.5 * rng.standard_normal(len(t)) + 0.5 * np.sin(2 * np.pi * 2000 * t)
        return (0.8 * env * wave / np.abs(wave).max()).astype(np.float32)

    @property
    def flash_times_s(self) -> list[float]:
        return [k / self.fps for k in self.flash_starts]

    def frame(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 BGR: white while a flash lasts, black otherwise."""
        return np.full((*self.size, 3), 255 if self._lit[i] else 0, np.uint8)

    def audio(self, start: int, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        part = self.audio_samples[start:start + n]
        out[:len(part)] = part
        return out

    def write(self, path: str | Path) -> Path:
        """The pattern as a media file plus ``path.json`` with the flash and click times."""
        path = Path(path)
        write_media(path, self.frame, self.audio, self.num_frames, self.fps, self.size,
                    SAMPLE_RATE)
        meta = {"generator": "calib.pattern", "fps": self.fps, "shift_ms": self.shift_s * 1000,
                "flash_times_s": self.flash_times_s,
                "click_times_s": [t + self.shift_s for t in self.flash_times_s]}
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps(meta, indent=1) + "\n")
        return sidecar
