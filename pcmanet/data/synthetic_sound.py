"""Sounds of the synthetic world: one object's sound from its recipe, and background noise.

* :func:`synthesize`: an object's unit-RMS sound from its class's :class:`SoundRecipe` and the
  instance's :class:`Voice`;
* :func:`background_noise`: pink, brown or babble-like noise, unit RMS;
* the clip mix (:func:`pcmanet.data.synthetic_scene.mix_clip`) sets levels from :data:`SNR_DB`,
  :data:`PEAK` and :data:`SILENT_PEAK`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from .synthetic_classes import SoundRecipe

SAMPLE_RATE = 16000  # Hz, as AVSBench's wavs and VGGish
_MAX_PARTIAL_HZ = 7200.0  # keep partials below Nyquist (8 kHz) and VGGish's 7.5 kHz top band


class NoiseKind(enum.Enum):
    """Background noise colours for :func:`background_noise`."""

    PINK = "pink"
    BROWN = "brown"
    BABBLE = "babble"


@dataclass(frozen=True)
class Voice:
    """Per-instance sound variation: pitch factor, rate factor, rolloff change, rhythm offset."""

    pitch: float = 1.0
    rate: float = 1.0
    brightness: float = 0.0  # added to -rolloff
    offset: float = 0.0  # fraction of a pulse period / modulation cycle


def _shape_spectrum(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Filter x (S,) by a real gain over ``rfftfreq(S)`` bins; returns float64 (S,)."""
    return np.fft.irfft(np.fft.rfft(x) * gain, len(x))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    r = _rms(x)
    return x / r if r > 1e-12 else x


def _band_gain(num_samples: int, lo: float, hi: float) -> np.ndarray:
    f = np.maximum(np.fft.rfftfreq(num_samples, 1 / SAMPLE_RATE), 1e-3)
    return 1 / np.sqrt((1 + (lo / f) ** 8) * (1 + (f / hi) ** 8))  # 4th-order-like skirts


def synthesize(recipe: SoundRecipe, voice: Voice, num_samples: int, rng: np.random.Generator,
               t0: float = 0.0) -> np.ndarray:
    """Sound of one object: (S,) float64 with unit RMS, S = ``num_samples`` at 16 kHz.

    ``t0`` is the absolute start time, so rhythms and modulations continue across segments;
    ``rng`` draws the partial phases and the noise.
    """
    t = t0 + np.arange(num_samples) / SAMPLE_RATE  # (S,) seconds
    r = recipe
    pulse_hz = r.pulse_hz * voice.rate
    pos = np.zeros(num_samples)
    if pulse_hz > 0:
        cycles = t * pulse_hz + voice.offset
        pos = cycles - np.floor(cycles)  # position in the pulse period, [0, 1)
    sig = np.zeros(num_samples)
    if r.f0 > 0 and r.noise_mix < 1:
        freq = np.full(num_samples, r.f0 * voice.pitch)
        if r.vibrato_depth > 0:
            vib = np.sin(2 * math.pi * (r.vibrato_hz * voice.rate * t + voice.offset))
            freq *= 1 + r.vibrato_depth * vib
        if r.sweep_octaves:
            freq *= 2.0 ** (r.sweep_octaves * np.minimum(pos / r.duty, 1.0))
        phase = 2 * math.pi * np.cumsum(freq) / SAMPLE_RATE  # (S,) rad
        top, tonal = float(freq.max()), np.zeros(num_samples)
        rolloff = r.rolloff - voice.brightness
        for n in range(1, r.harmonics + 1):
            k = n * math.sqrt(1 + r.inharmonic * n * n)
            if k * top > _MAX_PARTIAL_HZ:
                break
            tonal += n**-rolloff * np.sin(k * phase + rng.uniform(0, 2 * math.pi))
        sig += (1 - r.noise_mix) * _unit(tonal)
    if r.noise_mix > 0:
        gain = _band_gain(num_samples, *r.noise_band)
        sig += r.noise_mix * _unit(_shape_spectrum(rng.standard_normal(num_samples), gain))
    env = np.ones(num_samples)
    if pulse_hz > 0:
        tau = pos / pulse_hz  # seconds since the pulse's onset
        attack = np.clip(tau / 0.004, 0, 1)
        release = np.clip((r.duty - pos) / pulse_hz / 0.006, 0, 1)
        env = attack * release * (pos < r.duty)
        if r.decay_s > 0:
            env *= np.exp(-tau / r.decay_s)
    if r.am_depth > 0:
        am = np.sin(2 * math.pi * (r.am_hz * voice.rate * t + voice.offset))
        env *= 1 - r.am_depth * (0.5 + 0.5 * am)
    return _unit(sig * env)


def background_noise(num_samples: int, rng: np.random.Generator, kind: NoiseKind) -> np.ndarray:
    """Background noise (S,) float64 with unit RMS: pink (1/f), brown (1/f^2) or babble-like
    (several talkers of speech-shaped noise, each gated by a random ~4 Hz syllable envelope)."""
    f = np.maximum(np.fft.rfftfreq(num_samples, 1 / SAMPLE_RATE), 20.0)
    if kind is NoiseKind.PINK:
        return _unit(_shape_spectrum(rng.standard_normal(num_samples), 1 / np.sqrt(f)))
    if kind is NoiseKind.BROWN:
        return _unit(_shape_spectrum(rng.standard_normal(num_samples), 1 / f))
    speech = _band_gain(num_samples, 200.0, 3500.0) / np.sqrt(f / 200.0)
    t = np.arange(num_samples) / SAMPLE_RATE
    out = np.zeros(num_samples)
    for _ in range(5):
        knots = rng.random(int(t[-1] * 4) + 3) ** 2  # syllable loudness, 4 per second
        env = np.interp(t * 4 + rng.random(), np.arange(len(knots)), knots)
        out += env * _unit(_shape_spectrum(rng.standard_normal(num_samples), speech))
    return _unit(out)


def sample_noise_kind(rng: np.random.Generator) -> NoiseKind:
    """A random :class:`NoiseKind`."""
    return list(NoiseKind)[int(rng.integers(len(NoiseKind)))]


SNR_DB = (6.0, 20.0)  # sources : background noise
PEAK = (0.4, 0.95)  # peak of a clip with sound
SILENT_PEAK = (0.05, 0.3)  # peak of a clip with background noise only
