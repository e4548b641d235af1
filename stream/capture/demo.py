"""The synthetic sounding-objects scene (:class:`DemoScene`), video and audio:
:class:`DemoSource`, for the embedded default and for tests (docs/design.md section 3).
"""

from __future__ import annotations

import time

from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import NS_PER_S, Frame
from stream.capture.base import SAMPLE_RATE, Clock, Sleep, _SourceThread


class DemoSource(_SourceThread):
    """Plays :class:`DemoScene` ``(seed, size, fps)``: frames and 16 kHz audio on one clock.

    Frame ``i`` is stamped ``t0 + i / fps`` and has ``index`` i, so ``scene.frame(i)`` gives its
    ground-truth mask. Audio goes out in blocks of ``block_ms``; the block starting at sample s is
    stamped ``t0 + s / 16000``. ``realtime``: a frame is delivered at its time, an audio block
    when its last sample has happened; otherwise as fast as possible (in the same order).

    Args:
        frames, audio: the rings.
        fps, size, seed: the scene.
        realtime: pace in real time.
        clock, sleep: injected in tests.
        block_ms: audio block length.
        max_frames: end (``finished``) after this many frames and the audio up to their end
            time, ``max_frames / fps`` s; None: run until stopped.
    """

    def __init__(
        self,
        frames: FrameRing,
        audio: AudioRing | None,
        fps: float = 30.0,
        size: int = 224,
        seed: int = 0,
        realtime: bool = True,
        clock: Clock = time.monotonic_ns,
        sleep: Sleep = time.sleep,
        block_ms: int = 20,
        max_frames: int | None = None,
    ) -> None:
        super().__init__("demo", clock, sleep)
        from pcmanet.data.synthetic_demo import DemoScene  # heavy import, only when used

        self.scene = DemoScene(seed=seed, size=size, fps=fps)
        self.frame_ring, self.audio_ring, self.fps = frames, audio, fps
        self.realtime, self.max_frames = realtime, max_frames
        self.block_samples = max(1, SAMPLE_RATE * block_ms // 1000)

    def _run(self) -> None:
        t0 = self.t0_ns
        assert t0 is not None, "start() sets t0"
        end_sample = (
            None if self.max_frames is None else round(self.max_frames * SAMPLE_RATE / self.fps)
        )
        i = s = 0  # next frame index, next audio sample
        while not self.stopping:
            video_left = self.max_frames is None or i < self.max_frames
            audio_left = self.audio_ring is not None and (end_sample is None or s < end_sample)
            if not video_left and not audio_left:
                return
            n = (
                self.block_samples
                if end_sample is None
                else min(self.block_samples, end_sample - s)
            )
            t_frame_ns = t0 + i * NS_PER_S / self.fps
            t_block_end_ns = t0 + (s + n) * NS_PER_S / SAMPLE_RATE  # block ready at its end
            if video_left and (not audio_left or t_frame_ns <= t_block_end_ns):
                if self.realtime and not self._sleep_until(round(t_frame_ns)):
                    return
                image, _, _ = self.scene.frame(i)  # (H, W, 3) uint8 BGR
                self.frame_ring.put(Frame(image, round(t_frame_ns), i))
                self.frames += 1
                i += 1
            else:
                if self.realtime and not self._sleep_until(round(t_block_end_ns)):
                    return
                assert self.audio_ring is not None
                self.audio_ring.write(self.scene.audio(s, n), t0 + s * NS_PER_S // SAMPLE_RATE)
                self.audio_samples += n
                s += n
