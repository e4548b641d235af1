"""Write generated video + audio into one media file (PyAV), as a camera and microphone would
have captured them; ``run_live.py --video`` and ``MediaFileSource`` read such files back."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.stream import AudioStream
from av.video.stream import VideoStream


def media_codecs() -> tuple[str, str, str]:
    """-> (video codec, audio codec, container format) available in this FFmpeg build:
    H.264 + AAC in mp4 where possible, else MPEG-4 + PCM s16le in a QuickTime container."""
    audio = "aac" if "aac" in av.codecs_available else "pcm_s16le"
    video = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    return video, audio, "mp4" if audio == "aac" else "mov"


def write_media(path: str | Path, frame_at: Callable[[int], np.ndarray],
                audio_at: Callable[[int, int], np.ndarray], num_frames: int, fps: float,
                size: tuple[int, int], sample_rate: int = 16_000) -> tuple[str, str]:
    """Write ``num_frames`` frames and the audio that spans them, interleaved in time.

    frame_at(i) -> (H, W, 3) uint8 BGR, frame i shown at i / fps s.
    audio_at(start, n) -> (n,) float32 mono samples [start, start + n) at ``sample_rate``.
    size: (H, W), both even (yuv420p). Returns (video codec, audio codec) used.
    """
    H, W = size
    if H % 2 or W % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {W}x{H}")
    video_codec, audio_codec, container_format = media_codecs()
    num_samples = round(num_frames / fps * sample_rate)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container_format) as out:
        vstream = out.add_stream(video_codec, rate=Fraction(fps).limit_denominator(1001))
        astream = out.add_stream(audio_codec, rate=sample_rate, layout="mono")
        assert isinstance(vstream, VideoStream) and isinstance(astream, AudioStream)
        vstream.width, vstream.height = W, H
        vstream.pix_fmt = "yuv420p"
        written = 0
        for i in range(num_frames + 1):
            upto = (num_samples if i == num_frames
                    else min(round((i + 1) * sample_rate / fps), num_samples))
            if upto > written:  # the audio up to the next frame, before that frame
                chunk = np.ascontiguousarray(audio_at(written, upto - written),
                                             np.float32)[None, :]          # (1, n)
                aframe = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                aframe.sample_rate, aframe.pts = sample_rate, written
                aframe.time_base = Fraction(1, sample_rate)
                out.mux(astream.encode(aframe))
                written = upto
            if i < num_frames:
                out.mux(vstream.encode(av.VideoFrame.from_ndarray(frame_at(i), format="bgr24")))
        out.mux(astream.encode(None))
        out.mux(vstream.encode(None))
    return video_codec, audio_codec
