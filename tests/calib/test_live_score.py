"""calib.live_score: the media file it makes from an S4 split, and its scoring of masks.

The file is decoded back and compared with the split's frames and audio; headers and masks are
built the way the live engine makes them (window_indices over the frame times), from the
ground truth itself (IoU 1), from the twin clip's object (IoU 0), and windows that straddle
two clips are left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from calib.live_score import CLIP_SECONDS, Timeline, score_masks, write_split_media
from pcmanet.data.eval_families import read_twins, write_family
from stream.buffers.sync import window_indices

FPS = 4


@pytest.fixture(scope="module")
def split_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Timeline]:
    root = tmp_path_factory.mktemp("fam")
    write_family(root, "pitch", {"test": 2}, size=64, seed=1)
    media = root / "test.mp4"
    return root, media, write_split_media(root, "test", media, fps=FPS)


def _gt(timeline: Timeline, frame_index: int) -> np.ndarray:
    c, k = timeline.shown(frame_index)
    path = Path(timeline.mask_dirs[c]) / f"{timeline.names[c]}_{k}.png"
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127


def _headers(n: int) -> list[dict]:
    """Headers as the live engine writes them: each frame's 5-frame window, 1 s apart."""
    times = [round(i / FPS * 1e9) for i in range(n)]
    return [{"frame_index": i, "audio": "paired", "window": window_indices(times[:i + 1])}
            for i in range(n)]


def test_the_media_file_holds_the_clips_frames_and_audio(split_media) -> None:
    root, media, timeline = split_media
    assert json.loads(Path(f"{media}.json").read_text())["names"] == timeline.names
    with av.open(str(media)) as box:
        frames = [f.to_ndarray(format="bgr24") for f in box.decode(video=0)]
    with av.open(str(media)) as box:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in box.decode(audio=0)])
    assert len(frames) == 2 * CLIP_SECONDS * FPS
    data = root / "Single-source" / "s4_data" / "visual_frames" / "test"
    for i in (0, 5, 19, 21, 39):
        c, k = timeline.shown(i)
        png = next(data.glob(f"*/{timeline.names[c]}/{timeline.names[c]}_{k}.png"))
        assert np.abs(frames[i].astype(int) - cv2.imread(str(png)).astype(int)).mean() < 8
    assert abs(len(audio) - 2 * CLIP_SECONDS * 16_000) <= 2048  # codec padding at most


def test_ground_truth_scores_1_the_twin_0_and_straddling_windows_are_left_out(split_media
                                                                              ) -> None:
    root, _, timeline = split_media
    n = 2 * CLIP_SECONDS * FPS
    headers = _headers(n)
    perfect = score_masks(timeline, headers, [_gt(timeline, i) for i in range(n)])
    assert perfect["miou"] == 1.0
    # clip 0: every frame (its early windows repeat its first frame); clip 1: only frames
    # whose window (4 s back) starts in it, i.e. its last second
    assert perfect["scored"] == CLIP_SECONDS * FPS + FPS
    twins = read_twins(root, "test")
    assert twins[timeline.names[0]] == timeline.names[1]  # clip 1 shows clip 0's frames
    swapped = [_gt(timeline, (i + CLIP_SECONDS * FPS) % n) for i in range(n)]
    assert score_masks(timeline, headers, swapped)["miou"] == 0.0
    empty = [np.zeros_like(_gt(timeline, 0)) for _ in range(n)]
    assert score_masks(timeline, headers, empty)["miou"] == 0.0
    unpaired = [dict(h, audio="none") for h in headers]
    assert score_masks(timeline, unpaired, swapped)["scored"] == 0
