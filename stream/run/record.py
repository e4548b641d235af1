"""``--record DIR``: keep the inputs, the masks and every timestamp of a live run for replay.

Layout (everything on the pipeline clock, ``time.monotonic_ns()``)::

    DIR/frames/000123.jpg   the input frame (JPEG, quality 95), by the source's frame index
    DIR/masks/000123.png    the published mask (8-bit, 0/255 at threshold)
    DIR/timeline.jsonl      one JSON object per mask: the message header fields and stage times
    DIR/audio.wav           16 kHz mono 16-bit PCM of everything the microphone/file delivered
    DIR/meta.json           stream, model, threshold, ``audio_t0_ns`` (capture time of the
                            wav's first sample), counters at the end

A writer thread does the encoding and disk work behind a bounded queue, so a slow disk drops
recorded frames (counted in ``meta.json``) instead of delaying the pipeline. ``close`` flushes,
finalises the wav header and writes ``meta.json``; the files are complete after it returns.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import wave
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.buffers.audio_ring import AudioRing
from stream.buffers.frames import Frame

logger = logging.getLogger(__name__)
_AUDIO_CHUNK = 16_000  # most samples copied from the ring per poll


class Recorder:
    """A pipeline sink that writes a replayable recording into ``root``.

    Args:
        root: output folder (created; must be empty or new).
        audio: the pipeline's audio ring (None: no audio recorded).
        threshold: mask threshold for the PNG masks.
        meta: extra fields for meta.json (stream, model...).
        queue_size: frames waiting to be written before new ones are dropped.
    """

    def __init__(self, root: str | Path, audio: AudioRing | None = None, threshold: float = 0.5,
                 meta: dict[str, Any] | None = None, queue_size: int = 64) -> None:
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            raise FileExistsError(f"record folder {self.root} is not empty: pick a new one")
        (self.root / "frames").mkdir(parents=True, exist_ok=True)
        (self.root / "masks").mkdir(exist_ok=True)
        self.audio, self.threshold, self.meta = audio, threshold, dict(meta or {})
        self._queue: queue.Queue[tuple[Frame, np.ndarray, dict[str, Any]] | None] = \
            queue.Queue(maxsize=queue_size)
        self._timeline = (self.root / "timeline.jsonl").open("w")
        self._wav: wave.Wave_write | None = None
        self._audio_pos: int | None = None
        self.audio_t0_ns: int | None = None
        self.written = self.dropped = self.audio_samples = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()

    def __call__(self, frame: Frame, prob: np.ndarray, header: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((frame, prob, header))
        except queue.Full:
            self.dropped += 1

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                self._drain_audio()
                continue
            if item is None:
                self._drain_audio()
                return
            frame, prob, header = item
            name = f"{frame.index:06d}"
            cv2.imwrite(str(self.root / "frames" / f"{name}.jpg"), frame.image,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            mask = np.where(prob > self.threshold, 255, 0).astype(np.uint8)
            cv2.imwrite(str(self.root / "masks" / f"{name}.png"), mask)
            self._timeline.write(json.dumps(header, separators=(",", ":")) + "\n")
            self.written += 1
            self._drain_audio()

    def _drain_audio(self) -> None:
        """Append the audio that arrived since the last call to audio.wav."""
        ring = self.audio
        if ring is None or ring.t0_ns is None:
            return
        if self._audio_pos is None:
            self._audio_pos = ring.start_sample
            self.audio_t0_ns = ring.time_of(self._audio_pos)
            self._wav = wave.open(str(self.root / "audio.wav"), "wb")  # noqa: SIM115 (closed in close)
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(ring.sample_rate)
        assert self._wav is not None
        while True:
            start = max(self._audio_pos, ring.start_sample)  # overwritten audio is skipped
            n = min(ring.end_sample - start, _AUDIO_CHUNK)
            if n <= 0:
                return
            samples = ring.peek(start, n)
            if samples is None:
                return
            if start > self._audio_pos:  # keep time linear: zeros where audio was lost
                self._wav.writeframes(np.zeros(start - self._audio_pos, np.int16).tobytes())
            pcm = np.clip(samples * 32767.0, -32768, 32767).astype(np.int16)
            self._wav.writeframes(pcm.tobytes())
            self._audio_pos = start + n
            self.audio_samples += n

    def close(self) -> None:
        """Flush everything queued, finalise the files (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(5.0)
        self._timeline.close()
        if self._wav is not None:
            self._wav.close()
        meta = {**self.meta, "threshold": self.threshold, "audio_t0_ns": self.audio_t0_ns,
                "frames_written": self.written, "frames_dropped": self.dropped,
                "audio_samples": self.audio_samples}
        (self.root / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
