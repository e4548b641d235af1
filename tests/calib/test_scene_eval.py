"""calib.scene_eval's audio shift: the window moves, the frames scored do not."""

from __future__ import annotations

import numpy as np

from calib.scene_eval import AUDIO_WINDOW, SAMPLE_RATE, ShiftRow, compare_shifts, scene_frames
from pcmanet.audio import log_mel
from pcmanet.data.synthetic_demo import DemoScene

MS = 1_000_000


def test_shift_ends_the_window_earlier_and_keeps_the_scored_frames():
    scene = DemoScene(seed=2, size=64, fps=10)
    plain = list(scene_frames(scene, range(12, 44, 4)))
    shifted = list(scene_frames(scene, range(12, 44, 4), audio_shift_ms=20))
    for a, b in zip(plain, shifted, strict=True):
        t = a.paired.frame.t_capture_ns
        assert a.paired.t_audio_end_ns == t and a.paired.audio_lag_ns == 0
        assert b.paired.t_audio_end_ns == t - 20 * MS and b.paired.audio_lag_ns == 20 * MS
        assert b.paired.t_audio_end_ns - b.paired.t_audio_start_ns == 975 * MS
        assert a.settled == b.settled and np.array_equal(a.truth, b.truth)
        end = scene.frame_sample(b.paired.frame.index) - 20 * SAMPLE_RATE // 1000
        want = log_mel(scene.audio(end - AUDIO_WINDOW, AUDIO_WINDOW), SAMPLE_RATE)[0, 0].numpy()
        np.testing.assert_array_equal(b.paired.logmel, want)
    assert any(a.settled for a in plain)


def test_compare_shifts_against_the_first():
    """An engine that ignores the audio gives the same masks at every shift."""

    class Constant:
        def step(self, paired):
            prob = np.zeros(paired.frame.image.shape[:2], np.float32)
            prob[:20, :20] = 1.0
            return type("R", (), {"prob": prob})()

    rows = compare_shifts(Constant, [0, 20], seeds=[0], seconds=2.0, fps=5)  # type: ignore[arg-type]
    assert [r.shift_ms for r in rows] == [0, 20]
    assert all(isinstance(r, ShiftRow) and r.frames == 10 for r in rows)
    assert rows[1].agreement == 1.0 and rows[1].changed == 0
    assert rows[0].sounding_iou == rows[1].sounding_iou
