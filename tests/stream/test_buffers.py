"""FrameRing, AudioRing and MelRing: ordering, drop counts, wraparound, incremental log-mel."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch

from pcmanet.audio.frontend import HOP_SAMPLES, MEL_BANDS, WINDOW_SAMPLES, LogMel
from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing, OverflowPolicy, nearest_index
from stream.buffers.frames import Frame
from stream.buffers.mel_ring import MelRing

IMAGE = np.zeros((4, 6, 3), dtype=np.uint8)  # (H, W, 3) uint8 BGR, shared by all test frames
T0 = 5_000_000_000  # ns; an arbitrary monotonic start time
FRAME_NS = 33_333_333  # 30 fps


def make_frames(n: int, start: int = 0) -> list[Frame]:
    return [Frame(IMAGE, T0 + i * FRAME_NS, i) for i in range(start, start + n)]


def assert_balanced(stats: dict[str, int]) -> None:
    assert stats["written"] == stats["read"] + stats["dropped"] + stats["buffered"], stats


def run_concurrently(*targets: Callable[[], None]) -> None:
    """Run the functions in threads at once; each must finish within 20 s."""
    threads = [threading.Thread(target=f) for f in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
        assert not t.is_alive()


def make_signal(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """(S,) float32 @16 kHz: two tones, a chirp-like burst and noise; never silent."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t * (1 + t))
    wave += 0.02 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


def whole_logmel(wave: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return LogMel()(torch.from_numpy(wave)).numpy()  # (F, 64)


# -- nearest_index --------------------------------------------------------------------------
def test_nearest_index_picks_closest_and_earlier_on_tie():
    times = [0, 10, 20, 40]
    queries = (-5, 0, 4, 5, 6, 29, 31, 100)
    assert [nearest_index(times, t) for t in queries] == [0, 0, 0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError):
        nearest_index([], 0)


# -- FrameRing -------------------------------------------------------------------------------
def test_frame_ring_is_fifo():
    ring = FrameRing(8)
    for f in make_frames(5):
        assert ring.put(f)
    assert [ring.get().index for _ in range(5)] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    assert ring.get(timeout_s=0) is None
    assert ring.stats() == {"written": 5, "read": 5, "dropped": 0, "buffered": 0, "capacity": 8}


def test_drop_oldest_keeps_newest_n():
    ring = FrameRing(4, OverflowPolicy.DROP_OLDEST)
    accepted = [ring.put(f) for f in make_frames(10)]
    assert all(accepted)
    assert [f.index for f in ring.snapshot()] == [6, 7, 8, 9]
    stats = ring.stats()
    assert stats["dropped"] == 6 and stats["buffered"] == 4
    assert_balanced(stats)


def test_drop_newest_keeps_oldest_n():
    ring = FrameRing(4, OverflowPolicy.DROP_NEWEST)
    accepted = [ring.put(f) for f in make_frames(10)]
    assert accepted == [True] * 4 + [False] * 6
    assert [f.index for f in ring.snapshot()] == [0, 1, 2, 3]
    assert ring.stats()["dropped"] == 6
    assert_balanced(ring.stats())


def test_latest_nearest_snapshot_do_not_consume():
    ring = FrameRing(100)
    for f in make_frames(60):
        ring.put(f)
    assert ring.latest().index == 59  # type: ignore[union-attr]
    t_now = T0 + 59 * FRAME_NS
    assert ring.nearest(t_now - 1_000_000_000).index == 29  # type: ignore[union-attr]
    assert ring.nearest(t_now - 10_000_000_000).index == 0  # type: ignore[union-attr]
    assert ring.nearest(t_now + 10**9).index == 59  # type: ignore[union-attr]
    assert len(ring.snapshot()) == 60 and len(ring) == 60
    assert ring.stats()["read"] == 0
    assert FrameRing(2).latest() is None and FrameRing(2).nearest(0) is None


def test_get_latest_skips_older_frames_as_dropped():
    ring = FrameRing(10)
    for f in make_frames(7):
        ring.put(f)
    assert ring.get_latest().index == 6  # type: ignore[union-attr]
    assert len(ring) == 0
    stats = ring.stats()
    assert stats["read"] == 1 and stats["dropped"] == 6
    assert_balanced(stats)


def test_close_wakes_reader_and_drops_later_puts():
    ring = FrameRing(2)
    ring.put(make_frames(1)[0])
    ring.close()
    assert ring.get(timeout_s=None).index == 0  # type: ignore[union-attr]  # still drains
    assert ring.get(timeout_s=None) is None  # closed and empty: returns at once
    assert not ring.put(make_frames(1)[0])
    assert_balanced(ring.stats())


def test_invalid_capacity():
    with pytest.raises(ValueError):
        FrameRing(0)


@pytest.mark.races
def test_frame_ring_threads_smoke():
    """One writer, one reader, no sleeps: counts balance and the reader sees increasing
    indices."""
    ring = FrameRing(16)
    n = 3000
    seen: list[int] = []
    done = threading.Event()

    def write() -> None:
        for f in make_frames(n):
            ring.put(f)
        done.set()

    def read() -> None:
        while not (done.is_set() and len(ring) == 0):
            f = ring.get(timeout_s=0.01)
            if f is not None:
                seen.append(f.index)
            if len(seen) >= n:
                break

    run_concurrently(write, read)
    stats = ring.stats()
    assert stats["written"] == n and stats["read"] == len(seen)
    assert_balanced(stats)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


# -- AudioRing -------------------------------------------------------------------------------
def ramp(start: int, n: int) -> np.ndarray:
    """Samples whose value is their absolute index (exact in float32 below 2**24)."""
    return np.arange(start, start + n, dtype=np.float32)


def test_audio_ring_indices_and_clock():
    ring = AudioRing(1000)
    assert ring.t0_ns is None and ring.end_sample == 0
    assert ring.write(ramp(0, 300), t_start_ns=T0) == 0
    assert ring.write(ramp(300, 200), t_start_ns=T0 + 300 * 62_500) == 300
    assert ring.end_sample == 500 and ring.start_sample == 0
    assert ring.time_of(0) == T0 and ring.time_of(16000) == T0 + 1_000_000_000
    for s in (0, 1, 159, 16000, 123457):
        assert ring.sample_at(ring.time_of(s)) == s
    assert ring.sample_at(ring.time_of(10) + 1) == 11  # first sample at or after t
    np.testing.assert_array_equal(ring.read(100, 300), ramp(100, 300))


def test_audio_ring_wraparound_and_overwritten_ranges():
    rng = np.random.default_rng(1)
    ring = AudioRing(1000)
    start = 0
    for _ in range(200):  # ~50 k samples through a 1 k ring
        n = int(rng.integers(1, 700))
        ring.write(ramp(start, n))
        start += n
        lo = ring.start_sample
        assert lo == max(0, start - 1000)
        k = int(rng.integers(lo, start))
        np.testing.assert_array_equal(ring.peek(k, start - k), ramp(k, start - k))
    assert ring.peek(start - 1001, 10) is None  # overwritten
    assert ring.peek(start - 5, 10) is None  # not yet arrived
    assert ring.peek(start, 0) is not None and ring.peek(start - 1000, 1000) is not None
    assert ring.peek(-1, 1) is None


def test_audio_ring_counts_dropped_and_read():
    ring = AudioRing(1000)
    ring.write(ramp(0, 800))
    assert ring.read(0, 500) is not None
    ring.write(ramp(800, 900))  # end 1700: samples [0, 700) overwritten, [500, 700) unread
    stats = ring.stats()
    assert stats["read"] == 500 and stats["dropped"] == 200 and stats["buffered"] == 1000
    assert_balanced(stats)
    assert ring.read(1200, 100) is not None  # skips [700, 1200): counted as dropped
    stats = ring.stats()
    assert stats["read"] == 600 and stats["dropped"] == 700 and stats["buffered"] == 400
    assert_balanced(stats)
    ring.write(ramp(1700, 5000))  # one block larger than the ring
    np.testing.assert_array_equal(ring.peek(5700, 1000), ramp(5700, 1000))
    assert_balanced(ring.stats())


def test_audio_ring_fills_gaps_from_timestamps():
    ring = AudioRing(16000, gap_tolerance_s=0.02)
    ring.write(np.ones(1600, np.float32), t_start_ns=T0)
    # 2 ms of jitter: counted, not filled
    assert ring.write(np.ones(1600, np.float32), t_start_ns=T0 + 102_000_000) == 1600
    assert ring.stats()["clock_error_ns"] == 2_000_000
    # 50 ms late: 800 samples were lost upstream and become zeros
    start = ring.write(np.ones(1600, np.float32), t_start_ns=T0 + 250_000_000)
    assert start == 4000 and ring.time_of(start) == T0 + 250_000_000
    assert ring.stats()["gap"] == 800 and ring.end_sample == 5600
    assert not ring.peek(3200, 800).any()  # type: ignore[union-attr]
    assert_balanced(ring.stats())


def test_audio_ring_first_block_without_time_uses_clock():
    ring = AudioRing(100, clock=lambda: T0 + 10_000_000)
    ring.write(np.zeros(160, np.float32))  # 10 ms that ended at the clock's time
    assert ring.t0_ns == T0


def test_audio_ring_rejects_multichannel():
    with pytest.raises(ValueError):
        AudioRing(100).write(np.zeros((10, 2), np.float32))


class InterleavedRing(AudioRing):
    """Runs ``during`` in the middle of a copy, as another thread could."""

    during: Callable[[], None] | None = None

    def _copy_in(self, start: int, n: int, samples: np.ndarray | None) -> None:
        self._run_during()
        super()._copy_in(start, n, samples)

    def _copy_out(self, start: int, out: np.ndarray) -> None:
        super()._copy_out(start, out)
        self._run_during()

    def _run_during(self) -> None:
        during, self.during = self.during, None
        if during is not None:
            during()


def test_audio_ring_read_overtaken_by_write_returns_none():
    ring = InterleavedRing(1000)
    ring.write(ramp(0, 1000))
    ring.during = lambda: ring.write(ramp(1000, 300))  # overwrites [0, 300) mid-copy
    assert ring.read(200, 200) is None
    assert ring.stats()["read"] == 0
    ring.during = lambda: ring.write(ramp(1300, 100))  # overwrites [300, 400): not ours
    np.testing.assert_array_equal(ring.read(500, 200), ramp(500, 200))
    assert_balanced(ring.stats())


def test_audio_ring_read_during_write_of_its_range_returns_none():
    ring = InterleavedRing(1000)
    ring.write(ramp(0, 1000))
    got: list[np.ndarray | None] = []
    ring.during = lambda: got.extend([ring.peek(100, 100), ring.peek(600, 100)])
    ring.write(ramp(1000, 500))  # about to overwrite [0, 500)
    assert got[0] is None  # its slots are being overwritten
    np.testing.assert_array_equal(got[1], ramp(600, 100))


@pytest.mark.races
def test_audio_ring_threads_smoke():
    """A writer thread and a reader thread: every successful read is exactly the ramp. Reads
    race the writes throughout; every 100 writes the writer also waits until the reader has
    made one read (handshake on events, not on timing), so reads interleave with the writes
    however the threads are scheduled."""
    ring = AudioRing(2048)
    done, turn, ack = threading.Event(), threading.Event(), threading.Event()
    bad: list[int] = []
    reads = [0, 0, 0]  # racing reads ok, racing reads refused, quiet reads

    def write() -> None:
        for i in range(3000):
            ring.write(ramp(i * 160, 160))
            if i % 100 == 99:
                turn.set()
                assert ack.wait(timeout=20), "the reader stopped answering"
                ack.clear()
        done.set()

    def check(k: int, n: int) -> None:
        got = ring.peek(k, n)
        if got is None:
            reads[1] += 1
        else:
            reads[0] += 1
            if not np.array_equal(got, ramp(k, got.shape[0])):
                bad.append(k)

    def read() -> None:
        rng = np.random.default_rng(2)
        while not done.is_set():
            end = ring.end_sample
            k = max(0, end - int(rng.integers(1, 2600)))
            check(k, min(400, end - k))                      # racing the writer
            if turn.is_set():                                # the writer waits: quiet reads
                end = ring.end_sample
                held = ring.peek(end - 2048, 2048)           # all it holds: exactly the ramp
                if held is None or not np.array_equal(held, ramp(end - 2048, 2048)):
                    bad.append(end - 2048)
                if ring.peek(end - 2049, 1) is not None:     # one sample older: overwritten
                    bad.append(end - 2049)
                reads[2] += 1
                turn.clear()
                ack.set()

    run_concurrently(write, read)
    assert not bad, bad
    assert reads[2] == 30, reads


# -- MelRing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 159, 160, 401, 4000, "random"])
def test_mel_ring_incremental_equals_one_shot(chunk):
    wave = make_signal(1.2 if chunk == 1 else 2.5)
    expected = whole_logmel(wave)  # (F, 64)
    audio = AudioRing(8000)  # 0.5 s: wraps several times
    mel = MelRing(audio, capacity_frames=1000)
    rng = np.random.default_rng(3)
    pos = 0
    while pos < wave.shape[0]:
        n = int(rng.integers(1, 3000)) if chunk == "random" else chunk
        audio.write(wave[pos : pos + n], t_start_ns=T0 + pos * 62_500)
        pos += n
        mel.update()
    assert mel.frame_range == (0, expected.shape[0])
    got = mel.frames(0, expected.shape[0])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert mel.stats()["skipped"] == 0
    assert_balanced(audio.stats())


def test_mel_ring_window_ends_at_sample_time():
    wave = make_signal(3.0)
    expected = whole_logmel(wave)
    audio = AudioRing(16000 * 4)
    mel = MelRing(audio)
    for pos in range(0, wave.shape[0], 1024):
        audio.write(wave[pos : pos + 1024], t_start_ns=T0 + pos * 62_500)
        mel.update()
    for s in (15600, 15601, 15759, 15760, 20000, 33333, wave.shape[0]):
        k0 = (s - WINDOW_SAMPLES) // HOP_SAMPLES - 95
        window = mel.window(audio.time_of(s))
        assert window is not None, s
        logmel, t_start, t_end = window
        assert logmel.shape == (96, MEL_BANDS) and logmel.dtype == np.float32
        np.testing.assert_allclose(logmel, expected[k0 : k0 + 96], atol=1e-5, rtol=0)
        assert t_start == T0 + HOP_SAMPLES * k0 * 62_500
        assert t_end == t_start + (95 * HOP_SAMPLES + WINDOW_SAMPLES) * 62_500  # 0.975 s
        assert t_end <= audio.time_of(s) < t_end + HOP_SAMPLES * 62_500  # within one hop
    assert mel.frames(0, 10) is not None and mel.frames(0, expected.shape[0] + 1) is None
    assert mel.window(audio.time_of(15599)) is None  # starts before the stream
    assert mel.window(audio.time_of(wave.shape[0] + 160)) is None  # not arrived yet
    latest = mel.latest_window()
    assert latest is not None
    np.testing.assert_allclose(latest.logmel, expected[-96:], atol=1e-5, rtol=0)


def test_mel_ring_window_is_a_copy():
    audio = AudioRing(32000)
    audio.write(make_signal(1.5), t_start_ns=T0)
    mel = MelRing(audio, capacity_frames=100)
    mel.update()
    window = mel.latest_window()
    assert window is not None
    before = window.logmel.copy()
    audio.write(make_signal(0.5, seed=9), t_start_ns=T0 + 1_500_000_000)
    mel.update()  # overwrites ring slots
    np.testing.assert_array_equal(window.logmel, before)


def test_mel_ring_skips_audio_it_was_too_slow_for():
    wave = make_signal(3.0)
    expected = whole_logmel(wave)
    audio = AudioRing(16000)
    mel = MelRing(audio, capacity_frames=200)
    audio.write(wave[:8000], t_start_ns=T0)
    mel.update()  # frames [0, 48)
    audio.write(wave[8000:], t_start_ns=T0 + 8000 * 62_500)  # 2.5 s more into a 1 s ring
    assert mel.update() > 0
    begin, end = mel.frame_range
    assert end == expected.shape[0] and begin == 32000 // HOP_SAMPLES
    assert mel.stats()["skipped"] == begin - 48
    np.testing.assert_allclose(mel.frames(begin, end), expected[begin:end], atol=1e-5, rtol=0)
    assert audio.stats()["dropped"] > 0
    assert_balanced(audio.stats())


def test_mel_ring_without_audio():
    mel = MelRing(AudioRing(16000))
    assert mel.update() == 0
    assert mel.span(T0) is None and mel.window(T0) is None and mel.latest_window() is None
