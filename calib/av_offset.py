"""Estimate a capture setup's audio-video offset from flashes and clicks (or claps).

    python -m calib.av_offset --write-pattern pattern.mp4 [--seconds 20]    # 1. the pattern
    python run_live.py --camera 0 --mic default --record rec/ --duration 25  # 2. record it
    python -m calib.av_offset --recording rec/ --out configs/local/offset.yaml  # 3. estimate
    python -m calib.av_offset --video clap.mp4                              # or a media file

Visual events are the first frames of bursts of change (mean absolute difference between
consecutive frames far above its median: a flash, or hands meeting); audio events are onsets
(short-time energy rising far above the running floor: a click, a clap). The offset is the
lag at which most visual events find an audio onset, refined to the median of the matched
differences: ``offset = t_audio - t_video``, so a positive offset means the sound is stamped
later than the picture, and ``live.sync.av_offset_ms`` (the audio window ends at
``t_capture + offset``) takes it as is. Confidence combines the fraction of events matched,
their spread (against the frame period) and their number; a low-confidence estimate is not
written unless ``--force``. The flash pattern is precise to a few ms; claps to about a frame.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from calib.fragment import output_problem, write_fragment
from pcmanet.cli import Parser, fail

SAMPLE_RATE = 16_000
_SIDE = 64           # frames are compared at 64 x 64 grey
_HOP = 16            # audio energy hop: 1 ms at 16 kHz
_WIN = 32            # audio energy window: 2 ms


class CaptureError(Exception):
    """An input that cannot be analysed: names the file and what is missing."""


@dataclass
class Capture:
    """What was captured, on one clock (seconds).

    frame_t: (N,) capture time of each frame; gray: (N, 64, 64) float32 in [0, 255];
    audio: (M,) float32 mono at 16 kHz whose first sample was captured at ``audio_t0``;
    frame_index: (N,) source frame numbers where frames may be missing (a live recording
    keeps only the frames the engine processed), None when every frame is there.
    """

    frame_t: np.ndarray
    gray: np.ndarray
    audio: np.ndarray
    audio_t0: float
    frame_index: np.ndarray | None = None


@dataclass(frozen=True)
class OffsetEstimate:
    offset_ms: float           # t_audio - t_video, median over matched events
    spread_ms: float           # robust spread (1.4826 MAD) of the matched differences
    visual_events: int
    audio_events: int
    matched: int
    frame_period_ms: float
    confidence: float          # 0..1
    level: str                 # high | medium | low


# -- inputs ------------------------------------------------------------------------------------


def _small_gray(bgr: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(g, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)


def load_media(path: str | Path) -> Capture:
    """A media file with video and audio (PyAV), on the container's clock."""
    import av

    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: no such file")
    try:
        with av.open(str(path)) as box:
            if not box.streams.video or not box.streams.audio:
                raise CaptureError(f"{path}: needs both a video and an audio stream "
                                   f"(has {len(box.streams.video)} video, "
                                   f"{len(box.streams.audio)} audio)")
            times, grays = [], []
            for frame in box.decode(video=0):
                times.append(float(frame.time or 0.0))
                grays.append(_small_gray(frame.to_ndarray(format="bgr24")))
        with av.open(str(path)) as box:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks, t0 = [], None
            for aframe in box.decode(audio=0):
                if t0 is None:
                    t0 = float(aframe.time or 0.0)
                for out in resampler.resample(aframe):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as e:
        raise CaptureError(f"{path}: cannot be decoded ({e})") from None
    if len(times) < 3 or not chunks:
        raise CaptureError(f"{path}: too short to analyse ({len(times)} frames)")
    return Capture(np.asarray(times), np.stack(grays), np.concatenate(chunks).astype(np.float32),
                   t0 or 0.0)


def load_recording(root: str | Path) -> Capture:
    """A ``run_live.py --record DIR`` folder: frames/*.jpg stamped by timeline.jsonl, and
    audio.wav whose first sample was captured at meta.json's ``audio_t0_ns``."""
    root = Path(root)
    for name in ("timeline.jsonl", "audio.wav", "meta.json"):
        if not (root / name).is_file():
            raise CaptureError(f"{root}: no {name}; record with run_live.py --record DIR "
                               "(with --mic for a camera, so there is audio)")
    meta = json.loads((root / "meta.json").read_text())
    if meta.get("audio_t0_ns") is None:
        raise CaptureError(f"{root}: the recording holds no audio (meta.json audio_t0_ns is "
                           "null); record with --mic")
    headers = [json.loads(line) for line in (root / "timeline.jsonl").read_text().splitlines()
               if line.strip()]
    base = int(meta["audio_t0_ns"])
    times, grays, indices = [], [], []
    for h in sorted(headers, key=lambda h: h["t_capture_ns"]):
        image = cv2.imread(str(root / "frames" / f"{int(h['frame_index']):06d}.jpg"))
        if image is None:
            continue  # a frame the recorder dropped (counted in meta.json)
        times.append((int(h["t_capture_ns"]) - base) / 1e9)
        grays.append(_small_gray(image))
        indices.append(int(h["frame_index"]))
    with wave.open(str(root / "audio.wav")) as w:
        if w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
            raise CaptureError(f"{root}/audio.wav: expected 16 kHz 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    if len(times) < 3:
        raise CaptureError(f"{root}: too few frames to analyse ({len(times)})")
    return Capture(np.asarray(times), np.stack(grays), pcm.astype(np.float32) / 32768, 0.0,
                   np.asarray(indices))


# -- events ------------------------------------------------------------------------------------


def _bursts(active: np.ndarray, times: np.ndarray, min_gap_s: float,
            exact: np.ndarray | None = None) -> np.ndarray:
    """Times of the first True of each run of ``active`` that starts at least ``min_gap_s``
    after the previous burst began; with ``exact`` (bool per element), only bursts whose
    start is exact (a burst that begins where frames are missing is left out)."""
    starts = np.flatnonzero(active & ~np.concatenate([[False], active[:-1]]))
    out: list[tuple[float, bool]] = []                       # (burst start, exact)
    for i in starts:
        if not out or times[i] - out[-1][0] >= min_gap_s:
            out.append((float(times[i]), exact is None or bool(exact[i])))
    return np.asarray([t for t, ok in out if ok])


def visual_events(cap: Capture, min_gap_s: float = 0.3) -> np.ndarray:
    """(E,) times of frames where a burst of change begins."""
    diff = np.abs(np.diff(cap.gray, axis=0)).mean(axis=(1, 2))                  # (N-1,)
    med = float(np.median(diff))
    mad = float(np.median(np.abs(diff - med)))
    level = med + max(8 * 1.4826 * mad, 4.0)  # at least 4 grey levels on average
    # A change seen across missing frames happened somewhere among them: its time is not
    # known to a frame, so such an event is not used (a loaded live run drops frames).
    exact = None if cap.frame_index is None else np.diff(cap.frame_index) == 1
    return _bursts(diff > level, cap.frame_t[1:], min_gap_s, exact)


def audio_events(cap: Capture, min_gap_s: float = 0.3, rise_db: float = 15.0) -> np.ndarray:
    """(E,) times of onsets: 2 ms energy at least ``rise_db`` above the floor (the running
    20th percentile over the previous 0.5 s)."""
    x = cap.audio.astype(np.float64)
    n = (len(x) - _WIN) // _HOP + 1
    if n < 10:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x, _WIN)[::_HOP][:n]    # (n, WIN)
    db = 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)                   # (n,)
    look = round(0.5 * SAMPLE_RATE / _HOP)
    floor = np.array([np.percentile(db[max(0, k - look):k], 20) if k else db[0]
                      for k in range(0, n, 10)])
    floor = np.repeat(floor, 10)[:n]
    t = cap.audio_t0 + np.arange(n) * _HOP / SAMPLE_RATE
    return _bursts(db > floor + rise_db, t, min_gap_s)


def match(video: np.ndarray, audio: np.ndarray, max_offset_s: float, tol_s: float
          ) -> tuple[float, np.ndarray]:
    """The lag (s) at which most visual events have an audio onset within ``tol_s``, and the
    matched differences (t_audio - t_video) at it."""
    if len(video) == 0 or len(audio) == 0:
        return float("nan"), np.zeros(0)
    diffs = audio[None, :] - video[:, None]                                     # (V, A)
    candidates = diffs[np.abs(diffs) <= max_offset_s]
    best_lag, best = float("nan"), np.zeros(0)
    for lag in candidates:
        near = np.abs(diffs - lag) <= tol_s
        hits = np.array([row[np.argmin(np.abs(row - lag))] for row, ok in zip(diffs, near)
                         if ok.any()])
        if len(hits) > len(best) or (len(hits) == len(best) and len(hits)
                                     and np.std(hits) < np.std(best)):
            best_lag, best = float(lag), hits
    return best_lag, best


def estimate(cap: Capture, max_offset_ms: float = 500.0) -> OffsetEstimate:
    """The offset, its spread and its confidence (see the module docstring)."""
    period = float(np.median(np.diff(cap.frame_t))) if len(cap.frame_t) > 1 else 1 / 30
    v, a = visual_events(cap), audio_events(cap)
    tol = max(period, 0.02)
    _lag, hits = match(v, a, max_offset_ms / 1000, tol)
    if len(hits) == 0:
        return OffsetEstimate(float("nan"), float("nan"), len(v), len(a), 0, period * 1e3,
                              0.0, "low")
    offset = float(np.median(hits))
    spread = float(1.4826 * np.median(np.abs(hits - offset)))
    frac = len(hits) / max(len(v), 1)
    conf = frac * math.exp(-spread / period) * min(1.0, len(hits) / 5)
    if len(hits) >= 5 and frac >= 0.8 and spread <= period / 2:
        level = "high"
    elif len(hits) >= 3 and frac >= 0.5 and spread <= period:
        level = "medium"
    else:
        level = "low"
    return OffsetEstimate(offset * 1e3, spread * 1e3, len(v), len(a), len(hits), period * 1e3,
                          conf, level)


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m calib.av_offset",
                                description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--recording", type=Path, help="a run_live.py --record folder")
    src.add_argument("--video", type=Path, help="a media file with video and audio")
    src.add_argument("--write-pattern", type=Path, metavar="FILE",
                     help="write the flash-and-click pattern (mp4) and exit")
    p.add_argument("--seconds", type=float, default=20.0, help="pattern length")
    p.add_argument("--fps", type=float, default=30.0, help="pattern frame rate")
    p.add_argument("--shift-ms", type=float, default=0.0,
                   help="pattern: clicks this much after their flashes (to test)")
    p.add_argument("--max-offset-ms", type=float, default=500.0, help="largest |offset| searched")
    p.add_argument("--out", type=Path, help="write live.sync.av_offset_ms here")
    p.add_argument("--force", action="store_true", help="write even at low confidence")
    p.add_argument("--json", type=Path, help="write the estimate as JSON")
    return p.parse_args(argv)


def argument_problem(args: argparse.Namespace) -> str | None:
    """The first flag that cannot work, before anything is read or written; else None."""
    if args.write_pattern:
        if not 2 <= args.seconds < 3600:
            return (f"--seconds {args.seconds:g}: a pattern lasts 2 s to an hour (20 s gives "
                    "about 17 flashes)")
        if not 1 <= args.fps <= 240:
            return f"--fps {args.fps:g}: must be between 1 and 240 frames per second"
        if not abs(args.shift_ms) < 1000:
            return f"--shift-ms {args.shift_ms:g}: must be within +-1000 ms"
        if args.write_pattern.exists():
            return f"--write-pattern {args.write_pattern}: exists; give a new file name"
        return output_problem(args.write_pattern)
    if not 0 < args.max_offset_ms < float("inf"):
        return f"--max-offset-ms {args.max_offset_ms:g}: must be > 0"
    if args.recording is not None and not args.recording.is_dir():
        return f"--recording {args.recording}: no such folder (a run_live.py --record DIR)"
    if args.video is not None and not args.video.is_file():
        return f"--video {args.video}: no such file"
    return output_problem(args.out, args.json)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = argument_problem(args)
    if problem is not None:
        return fail(problem)
    if args.write_pattern:
        from calib.pattern import FlashClickPattern

        pattern = FlashClickPattern(args.seconds, args.fps, shift_ms=args.shift_ms)
        sidecar = pattern.write(args.write_pattern)
        print(f"wrote {args.write_pattern} ({len(pattern.flash_starts)} flashes; times in "
              f"{sidecar}); play it to the camera and microphone and record with "
              "run_live.py --record DIR")
        return 0
    try:
        cap = load_recording(args.recording) if args.recording else load_media(args.video)
    except CaptureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    est = estimate(cap, args.max_offset_ms)
    src = args.recording or args.video
    print(f"{src}: {est.visual_events} visual events, {est.audio_events} audio onsets, "
          f"{est.matched} matched (frame period {est.frame_period_ms:.1f} ms)")
    if args.json:
        args.json.write_text(json.dumps({k: (None if isinstance(v, float) and math.isnan(v)
                                             else v) for k, v in asdict(est).items()}) + "\n")
    if est.matched == 0:
        print("error: no flash or clap matched a sound within "
              f"{args.max_offset_ms:g} ms; record at least 5 flashes with clicks (or claps) "
              "in view and in earshot", file=sys.stderr)
        return 1
    print(f"offset {est.offset_ms:+.1f} ms (audio stamped later than video when positive), "
          f"spread {est.spread_ms:.1f} ms, confidence {est.confidence:.2f} ({est.level})")
    if args.out:
        if est.level == "low" and not args.force:
            print(f"error: confidence too low to write {args.out}; record more events in "
                  "view and in earshot, or pass --force", file=sys.stderr)
            return 1
        note = [f"{src}: {est.matched} of {est.visual_events} events matched, spread "
                f"{est.spread_ms:.1f} ms, confidence {est.confidence:.2f} ({est.level})"]
        path = write_fragment(args.out, {"sync": {"av_offset_ms": round(est.offset_ms, 1)}},
                              "calib.av_offset", note)
        print(f"wrote {path} (run_live.py --config {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
