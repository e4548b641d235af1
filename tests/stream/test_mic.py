"""MicSource: the streaming resampler, the callback -> worker path, and real capture through
PortAudio from a PulseAudio null sink that a wav is played into (fixture ``pulse_env``)."""

from __future__ import annotations

import importlib.abc
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchaudio

from stream.buffers.audio_ring import AudioRing
from stream.capture.base import SourceError
from stream.capture.mic import MicSource, list_audio_devices
from stream.capture.resample import StreamingResampler
from tests.stream.audio_env import SINK_RATE, PulseAudioEnv, write_wav

pytestmark = pytest.mark.races  # threads/sockets/processes: bench/stress_races.py

SR = 16_000
TONE_HZ = 1000.0
REPO = Path(__file__).resolve().parents[2]


def tone(rate: int, seconds: float, hz: float = TONE_HZ, amp: float = 0.5) -> np.ndarray:
    """(S,) float32 sine @rate."""
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def stream_through(resampler: StreamingResampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Feed x in blocks of the given sizes (cycled); the concatenated output."""
    out, i, k = [], 0, 0
    while i < x.shape[0]:
        n = sizes[k % len(sizes)]
        out.append(resampler.process(x[i : i + n]))
        i, k = i + n, k + 1
    return np.concatenate(out)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])))
    return float(np.fft.rfftfreq(x.shape[0], 1 / rate)[np.argmax(spectrum)])


# -- the resampling path, pure -----------------------------------------------------------------


@pytest.mark.parametrize("rate", [48_000, 44_100, 22_050, SR])
def test_streaming_resampler_equals_whole_signal_resampling(rate: int) -> None:
    rng = np.random.default_rng(0)
    x = tone(rate, 1.0) + 0.05 * rng.standard_normal(rate).astype(np.float32)  # (S,) @rate
    sizes = [int(n) for n in rng.integers(1, 2000, 40)] + [1, 7, 441, 480, 960]
    streamed = stream_through(StreamingResampler(rate, SR), x, sizes)  # (m,) @16 kHz
    whole = torchaudio.functional.resample(torch.from_numpy(x), rate, SR).numpy()
    # All but the last <= 25 ms is out: look-ahead (width + orig' inputs) and whole groups of
    # new' outputs per orig' inputs (160 per 441 @44.1 kHz) wait for input that never comes.
    assert whole.shape[0] - SR // 40 <= streamed.shape[0] <= whole.shape[0]
    # float32 sums in another order than torchaudio's conv1d: ~1e-5 over 475 taps @44.1 kHz
    np.testing.assert_allclose(streamed, whole[: streamed.shape[0]], rtol=0, atol=5e-5)


@pytest.mark.parametrize("block", [480, 441, 1024, 37])
def test_resampled_tone_is_a_clean_tone_across_blocks(block: int) -> None:
    x = tone(48_000, 1.0)
    y = stream_through(StreamingResampler(48_000, SR), x, [block])  # (m,) @16 kHz
    ideal = tone(SR, 1.0)[: y.shape[0]]
    warm = 32  # output samples while the filter still sees the zero padding before the tone
    assert np.max(np.abs(y[warm:] - ideal[warm:])) < 2e-3  # no click at any block boundary
    assert dominant_hz(y, SR) == pytest.approx(TONE_HZ, abs=2.0)


# -- the callback -> staging -> worker path, driven with PortAudio's callback arguments --------


def _time_info(current: float, adc: float) -> SimpleNamespace:
    return SimpleNamespace(currentTime=current, inputBufferAdcTime=adc)


OK, OVERFLOW = SimpleNamespace(input_overflow=False), SimpleNamespace(input_overflow=True)


def test_callback_blocks_are_downmixed_resampled_and_stamped_with_adc_time() -> None:
    clock_ns = 5_000_000_000
    ring = AudioRing(SR * 4)
    mic = MicSource("default", ring, clock=lambda: clock_ns)
    mic._prepare(channels=2, rate=48_000)
    left = tone(48_000, 1.0)
    block = np.stack([left, np.zeros_like(left)], axis=1)  # (S, 2): tone left, silence right
    for b in range(50):  # 50 x 20 ms, ADC time 10 ms before the callback time
        status = OVERFLOW if b == 7 else OK
        t_pa = 100.0 + 0.02 * (b + 1)
        mic._callback(block[b * 960 : (b + 1) * 960], 960, _time_info(t_pa, t_pa - 0.03), status)
        mic._drain()
    # offset = clock - currentTime at the first callback; block 0's ADC time is 0.03 s earlier
    assert ring.t0_ns is not None and abs(ring.t0_ns - (clock_ns - 30_000_000)) < 1_000
    assert mic.stats()["overflows"] == 1 and mic.blocks == 50 and mic.dropped_frames == 0
    got = ring.peek(0, ring.end_sample)
    assert got is not None and ring.end_sample == mic.audio_samples >= SR - 20
    ideal = 0.5 * tone(SR, 1.0)[: got.shape[0]]  # channel average halves the tone
    assert np.max(np.abs(got[32:] - ideal[32:])) < 2e-3
    assert abs(ring.stats()["clock_error_ns"]) < 1_000_000  # stamps agree with the count


def test_callback_without_adc_time_counts_samples_and_zero_fills_staging_drops() -> None:
    clock_ns = 7_000_000_000
    ring = AudioRing(SR * 4)
    mic = MicSource("default", ring, staging_s=0.1, clock=lambda: clock_ns)
    mic._prepare(channels=1, rate=48_000)  # staging: 0.1 s = 4800 frames
    ones = np.ones((960, 1), np.float32)  # (frames, C)
    for _ in range(8):  # 8 x 20 ms without draining: the last 3 blocks find no room
        mic._callback(ones, 960, _time_info(0.0, 0.0), OK)
    assert mic.dropped_frames == 3 * 960
    mic._drain()
    for _ in range(2):
        mic._callback(ones, 960, _time_info(0.0, 0.0), OK)
        mic._drain()
    # Counting: block 0 ended at its callback, so sample 0 is 20 ms before it.
    assert ring.t0_ns == clock_ns - 20_000_000
    got = ring.peek(0, ring.end_sample)
    assert got is not None
    # 10 blocks = 9600 frames @48 kHz -> 3200 @16 kHz, less the resampler's look-ahead;
    # the 3 dropped blocks are zeros (the filter smears their edges over a few samples).
    assert 3200 - 16 <= got.shape[0] <= 3200
    assert np.all(np.abs(got[1600 + 20 : 2560 - 20]) < 1e-3)  # dropped: 5..8 x 320 samples
    assert np.all(np.abs(got[20 : 1600 - 20] - 1.0) < 1e-2)


# -- real capture: PortAudio -> ALSA pulse plugin -> PulseAudio null sink <- paplay -----------


class StampedRing(AudioRing):
    """An AudioRing that also keeps every write's (start sample, t_start_ns, n)."""

    def __init__(self, capacity_samples: int) -> None:
        super().__init__(capacity_samples)
        self.writes: list[tuple[int, int, int]] = []

    def write(self, samples: np.ndarray, t_start_ns: int | None = None) -> int:
        start = super().write(samples, t_start_ns)
        self.writes.append((start, -1 if t_start_ns is None else t_start_ns, samples.shape[0]))
        return start


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.5 s silence, then 2.5 s of a 1 kHz tone, @48 kHz."""
    silence = np.zeros(SINK_RATE // 2, np.float32)
    signal = np.concatenate([silence, tone(SINK_RATE, 2.5)])
    return write_wav(tmp_path_factory.mktemp("wav") / "tone.wav", signal)


def _wait_until(pred: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("samplerate", [48_000, None], ids=["48kHz-resampled", "16kHz-native"])
def test_mic_records_the_played_tone(
    pulse_env: PulseAudioEnv, tone_wav: Path, samplerate: int | None
) -> None:
    ring = StampedRing(SR * 10)
    t_start = time.monotonic_ns()
    mic = MicSource("pulse", ring, samplerate=samplerate)
    mic.start()
    player = None
    try:
        assert mic.device_rate == (samplerate or SR) and mic.channels == 2
        assert _wait_until(lambda: ring.end_sample > 0, 3.0), f"no audio: {mic.stats()}"
        t_play = time.monotonic_ns()
        player = pulse_env.play(tone_wav)
        n1, t1 = ring.end_sample, time.monotonic_ns()
        assert _wait_until(lambda: ring.end_sample - n1 >= round(2.0 * SR), 5.0), mic.stats()
        n2, t2 = ring.end_sample, time.monotonic_ns()
    finally:
        t_stop = time.monotonic_ns()
        mic.stop()
        mic.join(2.0)
        if player is not None:
            pulse_env.stop_player(player)
    assert not mic.is_alive(), "stop() must end the thread within 2 s"
    assert (time.monotonic_ns() - t_stop) < 2_000_000_000
    assert mic.error is None, mic.error
    stats = mic.stats()
    assert {"overflows", "dropped_frames", "blocks", "audio_samples"} <= stats.keys()
    assert stats["overflows"] >= 0 and stats["audio_samples"] == ring.end_sample

    # 16 kHz: samples over wall time, and the ADC stamps against the sample count.
    rate = (n2 - n1) / ((t2 - t1) / 1e9)
    assert rate == pytest.approx(SR, rel=0.15), (n1, n2, t1, t2)
    starts = np.array([w[0] for w in ring.writes], np.float64)
    stamps = np.array([w[1] for w in ring.writes], np.float64)
    assert np.all(stamps > 0) and np.all(np.diff(stamps) > 0)  # ADC times, increasing
    slope = np.polyfit(starts, stamps, 1)[0]  # ns per sample
    assert 1e9 / slope == pytest.approx(SR, rel=0.01)
    assert ring.stats()["gap"] == 0
    # Monotonic clock: the first sample was captured within 1 s of start().
    assert ring.t0_ns is not None and abs(ring.t0_ns - t_start) < 1_000_000_000

    # The tone: 1 kHz, clean, starting ~0.5 s after paplay started.
    audio = ring.peek(ring.start_sample, ring.end_sample - ring.start_sample)
    assert audio is not None
    usable = audio.shape[0] // 160 * 160
    env = np.abs(audio[:usable]).reshape(-1, 160).max(axis=1)  # (S / 160,) peak per 10 ms
    loud = np.flatnonzero(env > 0.5 * env.max())
    assert env.max() > 0.05 and loud.shape[0] >= 50, f"tone not recorded (peak {env.max()})"
    onset = loud[0] * 160
    assert np.max(np.abs(audio[: max(0, onset - 800)]), initial=0.0) < 0.01  # silence first
    seg = audio[onset + 1600 : onset + 1600 + SR // 2]  # 0.5 s inside the tone
    assert seg.shape[0] == SR // 2
    assert dominant_hz(seg, SR) == pytest.approx(TONE_HZ, abs=4.0)
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(seg.shape[0]))) ** 2
    freqs = np.fft.rfftfreq(seg.shape[0], 1 / SR)
    in_band = spectrum[np.abs(freqs - TONE_HZ) < 50].sum() / spectrum.sum()
    assert in_band > 0.999, f"energy outside 1 kHz: {1 - in_band:.2e} (clicks or dropouts)"
    t_onset = ring.time_of(onset)
    assert 0.3e9 < t_onset - t_play < 1.5e9, (t_onset - t_play) / 1e9


def test_mic_ends_with_an_error_when_the_server_goes_away(pulse_env: PulseAudioEnv) -> None:
    """A second, private daemon is killed mid-capture: the source ends with one line, fast."""
    own = PulseAudioEnv()
    try:
        own.start()  # PULSE_SERVER now points at it (restored to pulse_env's by close())
        ring = AudioRing(SR * 4)
        mic = MicSource("default", ring)
        mic.start()
        try:
            assert _wait_until(lambda: ring.end_sample > 0, 3.0), mic.stats()
            own.kill_daemon()
            assert mic.finished.wait(4.0), "the source must end when its server is gone"
        finally:
            mic.stop()
            mic.join(2.0)
        assert not mic.is_alive()
        assert isinstance(mic.error, SourceError) and "\n" not in str(mic.error)
        assert str(mic.error).startswith("audio device 'default' stopped")
    finally:
        own.close()


def test_unknown_device_lists_the_inputs(pulse_env: PulseAudioEnv) -> None:
    with pytest.raises(SourceError) as info:
        MicSource("no-such-microphone", AudioRing(SR)).start()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no audio input device matches 'no-such-microphone'")
    assert "'pulse'" in message and "'default'" in message and "--list-devices" in message


def test_list_audio_devices_marks_the_default(pulse_env: PulseAudioEnv) -> None:
    table = list_audio_devices()
    rows = [line for line in table.splitlines() if "pulse" in line or "default" in line]
    assert any(line.lstrip().startswith(">") for line in rows), table
    assert "pulse" in table and "ALSA" in table


def test_no_input_devices_says_what_to_use_instead() -> None:
    """Real PortAudio with no PulseAudio server to reach: a machine without any input device
    (CI containers) gives one line suggesting --video / --demo."""
    code = (
        "import sounddevice as sd\n"
        "if any(d['max_input_channels'] > 0 for d in sd.query_devices()): print('HAS-INPUTS')\n"
        "else:\n"
        "    from stream.buffers.audio_ring import AudioRing\n"
        "    from stream.capture.mic import MicSource\n"
        "    try:\n"
        "        MicSource('default', AudioRing(16000)).start()\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__, e)\n"
    )
    env = {**os.environ, "PULSE_SERVER": "unix:/nonexistent/pulse", "JACK_NO_START_SERVER": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=REPO
    )
    if "HAS-INPUTS" in out.stdout:
        pytest.skip("this machine has audio input devices besides PulseAudio")
    if "PortAudio library not found" in out.stderr:
        pytest.skip("PortAudio not installed (apt-get install libportaudio2)")
    assert out.stdout.strip() == (
        "SourceError no audio input devices found (PortAudio sees none): connect a "
        "microphone, or run with --video FILE or --demo"
    ), out.stderr[-2000:]


class _NoPortAudio(importlib.abc.MetaPathFinder):
    """Makes ``import sounddevice`` fail as it does without libportaudio2 (simulated)."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: object = None
    ) -> ModuleSpec | None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_missing_portaudio_says_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    for call in (lambda: MicSource("default", AudioRing(SR)).start(), list_audio_devices):
        with pytest.raises(
            SourceError,
            match=r"^no microphone support: PortAudio library not "
            r"found \(install it: apt-get install libportaudio2\), or run with "
            r"--video FILE or --demo$",
        ):
            call()
