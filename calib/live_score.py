"""Score the live pipeline on an S4 split: a media file from its clips, ``run_live.py --video``
on it, an independent :class:`~stream.transport.subscribe.MaskSubscriber`, and mean IoU.

    python -m calib.live_score --data-root DIR [--split test] [--weights RUN/best.pt]
        [--fps 10] [--clips N] [--out WORK]

The clips of the split (CSV order; the first ``--clips``) are laid end to end, 5 s each: during
second s of a clip (s = 0..4) the video shows the clip's frame s + 1 (AVSBench frame k is taken
at k - 1 + 15/16 s, so it is the last picture of that second) and the audio is the clip's wav.
Every published mask carries ``window``, the source frame numbers of its T-frame window (1 s
apart by default, stream.buffers.sync.window_indices); a mask is scored when every frame of its
window lies in one clip (so does its 0.96 s audio window, which ends at the newest frame), and
its IoU is taken with that clip's ground-truth mask of the frame shown. Output: one JSON line
(mean IoU, frames scored, masks received, the command).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pcmanet.cli import Parser
from pcmanet.data.media_writer import write_media

REPO = Path(__file__).resolve().parent.parent
CLIP_SECONDS = 5
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Timeline:
    """What a media file made by :func:`write_split_media` holds: clip ``i`` spans frames
    ``[i * fps * 5, (i + 1) * fps * 5)``; ``mask_dirs[i]`` holds its ``<name>_<k>.png``."""

    fps: int
    names: list[str]
    mask_dirs: list[str]

    def clip_of(self, frame_index: int) -> int:
        return frame_index // (self.fps * CLIP_SECONDS)

    def shown(self, frame_index: int) -> tuple[int, int]:
        """(clip, AVSBench frame k 1..5) that video frame ``frame_index`` shows."""
        i = frame_index % (self.fps * CLIP_SECONDS)
        return self.clip_of(frame_index), min(i // self.fps + 1, CLIP_SECONDS)


def _split_clips(root: Path, split: str, limit: int | None) -> list[tuple[str, str]]:
    """(name, category) of the split's S4 clips in CSV order."""
    lines = (root / "Single-source" / "s4_meta_data.csv").read_text().splitlines()[1:]
    rows = [line.split(",") for line in lines if line.strip()]
    clips = [(r[0], r[2]) for r in rows if r[3] == split]
    return clips[:limit]


def _read_wav(path: Path) -> np.ndarray:
    """(S,) float32 mono of a 16 kHz 16-bit wav (the first channel)."""
    with wave.open(str(path)) as w:
        if w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16 kHz 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    out = np.zeros(CLIP_SECONDS * SAMPLE_RATE, np.float32)
    n = min(len(out), len(pcm))
    out[:n] = pcm[:n, 0] / 32768.0
    return out


def write_split_media(root: str | Path, split: str, out: str | Path, fps: int = 10,
                      clips: int | None = None) -> Timeline:
    """The split's clips end to end as one media file ``out`` (+ ``out``.json, the timeline).

    root: the AVSBench data root (holds ``Single-source/``); frames must have an even size.
    """
    root, out = Path(root), Path(out)
    data = root / "Single-source" / "s4_data"
    chosen = _split_clips(root, split, clips)
    if not chosen:
        raise ValueError(f"{root}: no {split} clips")
    frame_dirs = [data / "visual_frames" / split / cat / name for name, cat in chosen]
    mask_dirs = [data / "gt_masks" / split / cat / name for name, cat in chosen]
    audio = np.concatenate([_read_wav(data / "audio_wav" / split / cat / f"{name}.wav")
                            for name, cat in chosen])  # (clips * 5 s,)
    timeline = Timeline(fps, [n for n, _ in chosen], [str(d) for d in mask_dirs])
    cache: dict[tuple[int, int], np.ndarray] = {}

    def frame_at(i: int) -> np.ndarray:
        key = timeline.shown(i)
        if key not in cache:
            cache.clear()
            c, k = key
            image = cv2.imread(str(frame_dirs[c] / f"{chosen[c][0]}_{k}.png"))
            if image is None:
                raise FileNotFoundError(frame_dirs[c] / f"{chosen[c][0]}_{k}.png")
            cache[key] = np.asarray(image)
        return cache[key]

    H, W = frame_at(0).shape[:2]
    write_media(out, frame_at, lambda s, n: audio[s:s + n], len(chosen) * CLIP_SECONDS * fps,
                fps, (H, W))
    Path(f"{out}.json").write_text(json.dumps(asdict(timeline)) + "\n")
    return timeline


def score_masks(timeline: Timeline, headers: list[dict[str, Any]], masks: list[np.ndarray]
                ) -> dict[str, Any]:
    """Mean IoU of masks (H, W) bool against ground truth, over those made with paired audio
    (header ``audio``) whose ``window`` lies in one clip -> {"miou", "scored", "received",
    "per_clip": {name: mean IoU}}."""
    per_clip: dict[int, list[float]] = {}
    gt_cache: dict[tuple[int, int], np.ndarray] = {}
    for h, pred in zip(headers, masks, strict=True):
        window = h.get("window") or [h["frame_index"]]
        if h.get("audio", "paired") != "paired" or len({timeline.clip_of(i) for i in window}) != 1 \
                or timeline.clip_of(h["frame_index"]) >= len(timeline.names):
            continue
        key = timeline.shown(h["frame_index"])
        if key not in gt_cache:
            c, k = key
            path = Path(timeline.mask_dirs[c]) / f"{timeline.names[c]}_{k}.png"
            grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                raise FileNotFoundError(path)
            gt_cache[key] = np.asarray(grey) > 127
        gt = gt_cache[key]
        if pred.shape != gt.shape:
            pred = np.asarray(cv2.resize(pred.astype(np.uint8), gt.shape[::-1],
                              interpolation=cv2.INTER_NEAREST)) > 0
        union = int((pred | gt).sum())
        per_clip.setdefault(key[0], []).append(1.0 if union == 0 else
                                               float((pred & gt).sum()) / union)
    ious = [v for vs in per_clip.values() for v in vs]
    return {"miou": float(np.mean(ious)) if ious else float("nan"), "scored": len(ious),
            "received": len(headers),
            "per_clip": {timeline.names[c]: float(np.mean(v)) for c, v in sorted(per_clip.items())}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_and_receive(media: Path, weights: str | None, timeout_s: float = 900,
                    extra: list[str] | None = None) -> tuple[list[dict[str, Any]],
                                                             list[np.ndarray], str]:
    """``run_live.py --video media`` in a subprocess, masks received by a MaskSubscriber here
    -> (headers, masks (H, W) bool, run_live's stderr)."""
    from stream.transport.subscribe import MaskSubscriber

    url, stream = f"tcp://127.0.0.1:{_free_port()}", "score"
    cmd = [sys.executable, str(REPO / "run_live.py"), "--video", str(media), "--zmq", url,
           "--stream", stream, "--wait-subscriber", "60", "--set", "live.publish.sndhwm=100000",
           *(["--weights", weights] if weights else []), *(extra or [])]
    headers: list[dict[str, Any]] = []
    masks: list[np.ndarray] = []
    with MaskSubscriber(url, topic=f"mask/{stream}", rcvhwm=0, timeout_s=1.0) as sub:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            while True:
                msg = sub.recv()
                if msg is not None and msg.mask is not None:
                    headers.append(msg.header)
                    masks.append(msg.mask.astype(bool) if msg.mask.dtype != np.float32
                                 else msg.mask > msg.header["threshold"])
                elif msg is None and proc.poll() is not None:
                    break  # run_live ended and nothing more arrived within a second
            _, err = proc.communicate(timeout=timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
    if proc.returncode != 0:
        raise RuntimeError(f"run_live.py failed ({proc.returncode}): {err[-2000:]}")
    return headers, masks, err


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m calib.live_score", description=__doc__)
    p.add_argument("--data-root", required=True, help="AVSBench data root (Single-source/)")
    p.add_argument("--split", default="test")
    p.add_argument("--weights", help="checkpoint (default: run_live's, the demo model)")
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--clips", type=int, help="only the split's first N clips")
    p.add_argument("--out", default=None, help="work folder for the media file (default: a "
                   "temporary one)")
    p.add_argument("--set", action="append", default=[], dest="overrides",
                   help="run_live.py --set KEY=VALUE")
    args = p.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        media = work / f"{args.split}.mp4"
        timeline = write_split_media(args.data_root, args.split, media, args.fps, args.clips)
        extra = [x for kv in args.overrides for x in ("--set", kv)]
        headers, masks, _ = run_and_receive(media, args.weights, extra=extra)
        result = score_masks(timeline, headers, masks)
    result.pop("per_clip")
    print(json.dumps({**result, "clips": len(timeline.names), "fps": args.fps,
                      "weights": args.weights or "demo"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
