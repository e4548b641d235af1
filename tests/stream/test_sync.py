"""Pairer and window_indices, driven by an injected clock and sleep (nothing really sleeps).

The first Pairer tests are the ``exact`` policy (wait a bounded time for the audio); the
``latest`` policy (never wait, report the lag) follows them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmanet.audio.frontend import HOP_SAMPLES, WINDOW_SAMPLES, LogMel
from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import nearest_index
from stream.buffers.frames import Frame
from stream.buffers.mel_ring import MelRing
from stream.buffers.sync import Pairer, PairingPolicy, window_indices

T0 = 7_000_000_000  # ns; when the first audio sample was captured
NS_PER_SAMPLE = 62_500  # 1e9 / 16 kHz
MS = 1_000_000
IMAGE = np.zeros((2, 2, 3), dtype=np.uint8)


class FakeTime:
    """The pipeline clock and a sleep that only advances it, delivering audio as time passes."""

    def __init__(self, now: int) -> None:
        self.now, self.slept_ns, self.sleeps = now, 0, 0
        self.mic: FakeMic | None = None

    def clock(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 0.002 + 1e-12, seconds  # bounded by poll_s
        step = round(seconds * 1e9)
        self.now += step
        self.slept_ns += step
        self.sleeps += 1
        if self.mic is not None:
            self.mic.deliver_until(self.now)

    def advance(self, ns: int) -> None:
        self.now += ns
        if self.mic is not None:
            self.mic.deliver_until(self.now)


class FakeMic:
    """Writes ``wave`` in blocks, each once its last sample is captured plus ``latency_ns``."""

    def __init__(
        self, ring: AudioRing, wave: np.ndarray, block: int = 160, latency_ns: int = 0
    ) -> None:
        self.ring, self.wave, self.block, self.latency_ns = ring, wave, block, latency_ns
        self.pos = 0  # samples delivered so far

    def deliver_until(self, now: int) -> None:
        while self.pos < self.wave.shape[0]:
            end = min(self.pos + self.block, self.wave.shape[0])
            if T0 + end * NS_PER_SAMPLE + self.latency_ns > now:
                return
            self.ring.write(self.wave[self.pos : end], t_start_ns=T0 + self.pos * NS_PER_SAMPLE)
            self.pos = end


def make_wave(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 523 * t) + 0.05 * rng.standard_normal(t.shape)).astype(
        np.float32
    )


def expected_window(whole: np.ndarray, t_end_ns: int) -> np.ndarray:
    """Frames [k0, k0 + 96) of the whole signal for the window ending at t_end_ns."""
    s = -((T0 - t_end_ns) // NS_PER_SAMPLE)  # first sample at or after t_end_ns
    k0 = (s - WINDOW_SAMPLES) // HOP_SAMPLES - 95
    return whole[k0 : k0 + 96]


def setup(seconds: float = 3.0, latency_ns: int = 0, policy=PairingPolicy.EXACT, **pairer_args):
    wave = make_wave(seconds)
    with torch.no_grad():
        whole = LogMel()(torch.from_numpy(wave)).numpy()  # (F, 64)
    ring = AudioRing(16000 * 5)
    fake = FakeTime(T0)
    fake.mic = FakeMic(ring, wave, latency_ns=latency_ns)
    pairer = Pairer(MelRing(ring), clock=fake.clock, sleep=fake.sleep, policy=policy,
                    **pairer_args)
    return pairer, fake, whole


def frame_at(t_ns: int, index: int = 0) -> Frame:
    return Frame(IMAGE, t_ns, index)


# -- Pairer, exact policy ----------------------------------------------------------------------
def test_on_time_without_waiting():
    pairer, fake, whole = setup()
    fake.advance(3000 * MS)  # all 3 s of audio delivered
    t = T0 + 2000 * MS
    paired = pairer.pair(frame_at(t))
    assert not paired.audio_late and fake.sleeps == 0
    assert paired.logmel is not None and paired.logmel.shape == (96, 64)
    np.testing.assert_allclose(paired.logmel, expected_window(whole, t), atol=1e-5, rtol=0)
    assert paired.t_audio_end_ns is not None and paired.t_audio_start_ns is not None
    assert t - 10 * MS < paired.t_audio_end_ns <= t  # ends within one hop before the frame
    assert paired.t_audio_end_ns - paired.t_audio_start_ns == 975 * MS  # 96 frames of 25 ms/10 ms
    assert pairer.stats()["on_time"] == 1 and pairer.stats()["wait_ns_max"] == 0


def test_waits_for_audio_in_flight_then_on_time():
    pairer, fake, whole = setup(latency_ns=20 * MS)  # blocks arrive 20 ms after their end
    t = T0 + 2000 * MS
    fake.advance(2000 * MS)  # the frame is paired the moment it is captured
    paired = pairer.pair(frame_at(t))
    assert not paired.audio_late
    np.testing.assert_allclose(paired.logmel, expected_window(whole, t), atol=1e-5, rtol=0)
    # The last frame before t ends at t - 5 ms; its 10 ms block arrives 20 ms after t.
    assert 15 * MS <= fake.slept_ns <= 22 * MS
    assert pairer.stats()["wait_ns_max"] == fake.slept_ns


def test_late_after_bounded_wait_uses_latest_window():
    pairer, fake, whole = setup(seconds=2.0, max_wait_s=0.05)  # audio ends at T0 + 2 s
    fake.advance(2100 * MS)
    t = T0 + 2100 * MS  # needs audio up to 2.1 s, which never comes
    paired = pairer.pair(frame_at(t))
    assert paired.audio_late
    assert fake.slept_ns == 50 * MS  # waited exactly max_wait, in polls of <= 2 ms
    np.testing.assert_allclose(paired.logmel, whole[-96:], atol=1e-5, rtol=0)
    assert paired.t_audio_end_ns is not None and paired.t_audio_end_ns <= T0 + 2000 * MS < t
    stats = pairer.stats()
    assert stats["late"] == 1 and stats["wait_ns_total"] == 50 * MS


def test_stalled_audio_is_not_waited_for_again():
    pairer, fake, _ = setup(seconds=2.0, max_wait_s=0.05, stall_s=0.5)
    fake.advance(2100 * MS)
    assert pairer.pair(frame_at(fake.now)).audio_late
    fake.advance(100 * MS)  # 150 ms without audio: still waits
    sleeps = fake.sleeps
    assert pairer.pair(frame_at(fake.now, 1)).audio_late and fake.sleeps > sleeps
    fake.advance(500 * MS)  # the source has been silent for > stall_s: no more waiting
    sleeps = fake.sleeps
    for i in range(2, 12):
        fake.advance(33 * MS)
        assert pairer.pair(frame_at(fake.now, i)).audio_late
    assert fake.sleeps == sleeps
    assert pairer.stats()["late"] == 12


def test_no_audio_at_all():
    pairer, fake, _ = setup(seconds=0.0)
    fake.advance(1000 * MS)
    paired = pairer.pair(frame_at(fake.now))
    assert paired.logmel is None and paired.t_audio_start_ns is None and not paired.audio_late
    assert fake.sleeps == 0 and pairer.stats()["no_audio"] == 1


def test_window_before_stream_start_is_unavailable():
    pairer, fake, _ = setup()
    fake.advance(3000 * MS)
    paired = pairer.pair(frame_at(T0 + 500 * MS))  # would need audio from before T0
    assert paired.logmel is None and not paired.audio_late and fake.sleeps == 0
    assert pairer.stats()["unavailable"] == 1


def test_startup_with_less_than_one_window_is_late_without_logmel():
    pairer, fake, _ = setup()
    fake.advance(500 * MS)
    paired = pairer.pair(frame_at(T0 + 1200 * MS))
    assert paired.audio_late and paired.logmel is None


@pytest.mark.parametrize("offset_ms", [100, -250])
def test_offset_moves_the_window(offset_ms):
    pairer, fake, whole = setup(offset_ns=offset_ms * MS)
    fake.advance(3000 * MS)
    t = T0 + 1500 * MS
    paired = pairer.pair(frame_at(t))
    target = t + offset_ms * MS
    assert not paired.audio_late and paired.t_audio_end_ns is not None
    assert target - 10 * MS < paired.t_audio_end_ns <= target
    np.testing.assert_allclose(paired.logmel, expected_window(whole, target), atol=1e-5, rtol=0)


def test_zero_max_wait_never_sleeps():
    pairer, fake, _ = setup(seconds=2.0, max_wait_s=0.0)
    fake.advance(2000 * MS)
    assert pairer.pair(frame_at(T0 + 2050 * MS)).audio_late and fake.sleeps == 0


def test_stream_of_frames_at_30fps_is_on_time_with_realistic_latency():
    """64 ms audio blocks delivered 5 ms late; frames paired 40 ms after capture: on time."""
    pairer, fake, whole = setup(seconds=4.0, latency_ns=5 * MS)
    fake.mic.block = 1024  # type: ignore[union-attr]
    late = 0
    for i in range(60):
        t = T0 + 1500 * MS + i * 33_333_333
        fake.advance(t + 40 * MS - fake.now)
        paired = pairer.pair(frame_at(t, i))
        late += paired.audio_late
        if not paired.audio_late:
            np.testing.assert_allclose(paired.logmel, expected_window(whole, t), atol=1e-5, rtol=0)
    assert late == 0
    stats = pairer.stats()
    assert stats["paired"] == 60 and stats["wait_ns_max"] <= 50 * MS


# -- Pairer, latest policy (the default) ---------------------------------------------------------
def pair_now(pairer: Pairer, fake: FakeTime, frame: Frame):
    """Pair and check that the Pairer neither slept nor let the clock move."""
    now, sleeps = fake.now, fake.sleeps
    paired = pairer.pair(frame)
    assert fake.now == now and fake.sleeps == sleeps, "latest pairing waited"
    return paired


def wanted_end(t_ns: int) -> int:
    """End time of the window ending at t_ns: its last frame ends at or before t_ns."""
    s = -((T0 - t_ns) // NS_PER_SAMPLE)
    k_stop = (s - WINDOW_SAMPLES) // HOP_SAMPLES + 1
    return T0 + (HOP_SAMPLES * (k_stop - 1) + WINDOW_SAMPLES) * NS_PER_SAMPLE


def test_latest_is_the_default_and_on_time_audio_is_the_exact_window():
    assert Pairer(MelRing(AudioRing(16000 * 5))).policy is PairingPolicy.LATEST
    pairer, fake, whole = setup(policy=PairingPolicy.LATEST)
    fake.advance(3000 * MS)
    t = T0 + 2000 * MS
    paired = pair_now(pairer, fake, frame_at(t))
    assert not paired.audio_late and paired.audio_lag_ns == 0
    np.testing.assert_allclose(paired.logmel, expected_window(whole, t), atol=1e-5, rtol=0)
    assert paired.t_audio_end_ns == wanted_end(t)
    assert pairer.stats()["on_time"] == 1 and pairer.stats()["wait_ns_total"] == 0


@pytest.mark.parametrize("latency_ms", [0, 5, 20, 30])
def test_latest_never_waits_and_reports_the_lag(latency_ms):
    """10 ms blocks arriving ``latency_ms`` after their end; each frame is paired the moment it
    is captured: the newest window is used at once, its lag is the shortfall in 10 ms hops."""
    pairer, fake, whole = setup(latency_ns=latency_ms * MS, policy=PairingPolicy.LATEST,
                                max_lag_s=0.05)
    fake.advance(1500 * MS)
    lags = set()
    for i in range(30):
        t = fake.now
        paired = pair_now(pairer, fake, frame_at(t, i))
        received = T0 + fake.mic.pos * NS_PER_SAMPLE  # type: ignore[union-attr]
        lag = wanted_end(t) - wanted_end(received)  # the newest window ends at wanted_end(received)
        assert not paired.audio_late and paired.audio_lag_ns == lag and lag % (10 * MS) == 0
        assert paired.t_audio_end_ns == wanted_end(t) - lag
        assert paired.t_audio_end_ns - paired.t_audio_start_ns == 975 * MS
        np.testing.assert_allclose(paired.logmel, expected_window(whole, received), atol=1e-5,
                                   rtol=0)
        lags.add(lag)
        fake.advance(33 * MS + 333_333)
    # audio up to t - latency - (up to one 10 ms block): the window ends that much early
    assert max(lags) <= (latency_ms + 20) * MS and (latency_ms < 10 or min(lags) > 0)
    stats = pairer.stats()
    assert stats["on_time"] + stats["lagged"] == 30 and stats["late"] == 0
    assert stats["lag_ns_max"] == max(lags) and stats["wait_ns_max"] == 0


def test_latest_audio_further_behind_than_max_lag_is_late_with_the_newest_window():
    pairer, fake, whole = setup(latency_ns=60 * MS, policy=PairingPolicy.LATEST, max_lag_s=0.04)
    fake.advance(2000 * MS)
    t = fake.now
    paired = pair_now(pairer, fake, frame_at(t))
    received = T0 + fake.mic.pos * NS_PER_SAMPLE  # type: ignore[union-attr]
    assert paired.audio_late and paired.audio_lag_ns == wanted_end(t) - wanted_end(received)
    assert paired.audio_lag_ns > 40 * MS
    np.testing.assert_allclose(paired.logmel, expected_window(whole, received), atol=1e-5, rtol=0)
    assert pairer.stats()["late"] == 1


def test_latest_lag_exactly_at_the_bound_is_not_late():
    pairer, fake, _ = setup(policy=PairingPolicy.LATEST, max_lag_s=0.03)
    fake.advance(2000 * MS)  # audio up to T0 + 2 s, in 10 ms blocks
    paired = pair_now(pairer, fake, frame_at(T0 + 2030 * MS))
    assert paired.audio_lag_ns == 30 * MS and not paired.audio_late
    paired = pair_now(pairer, fake, frame_at(T0 + 2040 * MS, 1))
    assert paired.audio_lag_ns == 40 * MS and paired.audio_late


def test_latest_does_not_wait_for_a_source_that_has_not_started():
    """A microphone just opened: nothing delivered, then audio in large bursts. No frame waits;
    until a whole window exists the frames go on without audio (the model hears silence)."""
    pairer, fake, _ = setup(seconds=4.0, policy=PairingPolicy.LATEST)
    fake.mic = None  # nothing is delivered while the clock runs
    fake.advance(300 * MS)
    first = pair_now(pairer, fake, frame_at(fake.now))
    assert first.logmel is None and not first.audio_late
    assert pairer.stats()["no_audio"] == 1
    mic = FakeMic(pairer.mel_ring.audio, make_wave(4.0), block=8000)  # 0.5 s bursts
    outcomes = []
    for i in range(1, 90):
        fake.advance(33 * MS)
        mic.deliver_until(fake.now)
        paired = pair_now(pairer, fake, frame_at(fake.now, i))
        outcomes.append(paired.logmel is not None)
        if paired.logmel is None:
            assert paired.t_audio_start_ns is None and paired.audio_lag_ns == 0
    assert not outcomes[0] and outcomes[-1]  # silence first, audio once a window exists
    assert pairer.stats()["wait_ns_total"] == 0 and fake.sleeps == 0


def test_latest_reports_stalled_audio_as_late_without_waiting():
    pairer, fake, whole = setup(seconds=2.0, policy=PairingPolicy.LATEST)
    fake.advance(2000 * MS)
    for i in range(10):
        fake.advance(100 * MS)
        paired = pair_now(pairer, fake, frame_at(fake.now, i))
        assert paired.audio_late and paired.audio_lag_ns == wanted_end(fake.now) - wanted_end(
            T0 + 2000 * MS)
        np.testing.assert_allclose(paired.logmel, whole[-96:], atol=1e-5, rtol=0)
    assert pairer.stats()["late"] == 10


def test_exact_late_window_reports_its_lag():
    pairer, fake, _ = setup(seconds=2.0, max_wait_s=0.05)
    fake.advance(2100 * MS)
    paired = pairer.pair(frame_at(T0 + 2100 * MS))
    assert paired.audio_late and paired.audio_lag_ns == 100 * MS


def test_bad_pairer_arguments():
    with pytest.raises(ValueError, match="max_lag_s"):
        Pairer(MelRing(AudioRing(16000 * 5)), max_lag_s=-0.01)
    with pytest.raises(ValueError):
        Pairer(MelRing(AudioRing(16000 * 5)), policy="sometimes")  # type: ignore[arg-type]


# -- window_indices --------------------------------------------------------------------------
def times_30fps(n: int) -> list[int]:
    return [T0 + round(i * 1e9 / 30) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [0, 0, 0, 0, 0]),
        (15, [0, 0, 0, 0, 14]),  # 0.5 s of history: repeat the oldest
        (45, [0, 0, 0, 14, 44]),  # 1.5 s: one frame 1 s back
        (100, [0, 9, 39, 69, 99]),  # 3.3 s: t - 4 s is before the start
    ],
)
def test_window_indices_at_startup(n, expected):
    assert window_indices(times_30fps(n)) == expected


def test_window_indices_steady_state_30fps():
    history = times_30fps(300)
    assert window_indices(history) == [179, 209, 239, 269, 299]
    assert window_indices(history, T=3, spacing_s=0.5) == [269, 284, 299]
    assert window_indices(history, T=1) == [299]


def test_window_indices_with_jitter_and_drops_match_nearest():
    rng = np.random.default_rng(4)
    history = [t + int(rng.integers(-3 * MS, 3 * MS)) for t in times_30fps(400)]
    history = sorted(t for i, t in enumerate(history) if i % 7 != 3)  # some frames dropped
    idx = window_indices(history)
    assert idx[-1] == len(history) - 1 and idx == sorted(idx)
    for j, i in zip(range(4, 0, -1), idx):
        target = history[-1] - j * 1_000_000_000
        assert abs(history[i] - target) == min(abs(t - target) for t in history)
        assert i == nearest_index(history, target)


def test_window_indices_reference_time():
    history = times_30fps(300)
    idx = window_indices(history, t_now=history[-1] + 500 * MS)
    assert idx == [194, 224, 254, 284, 299]  # targets shift; the newest stays last


def test_window_indices_rejects_bad_input():
    with pytest.raises(ValueError):
        window_indices([])
    with pytest.raises(ValueError):
        window_indices([2, 1])
    with pytest.raises(ValueError):
        window_indices([1], T=0)
