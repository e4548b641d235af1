"""Sounds of the evaluation-only families (:mod:`pcmanet.data.eval_families`).

None of them comes from :class:`~pcmanet.data.synthetic_classes.SoundRecipe`, the demo
generator's only sound recipe: each family has its own synthesiser, and within a family the
classes differ along *one* axis only, so a model must learn that axis to tell them apart:

* ``pitch``: decaying harmonic notes re-struck at random moments; the same timbre and envelope
  law for every class, only the fundamental differs (:data:`PITCH_HZ`);
* ``rhythm``: one fixed inharmonic "wood block" strike (same partials, same decay) for every
  class, only the pattern of strikes in time differs (:data:`RHYTHMS`);
* ``speech``: formant-synthesised vowels (a glottal pulse train through vowel resonances) in
  syllables at random times and a random voice pitch; only the vowel's formants differ
  (:data:`VOWELS`).

Every class's random choices (onset times, voice pitch, phase) carry no class information.
:func:`family_sound` returns (S,) float64 at 16 kHz with unit RMS.
"""

from __future__ import annotations

import math

import numpy as np

from .synthetic_sound import SAMPLE_RATE

FAMILIES = ("pitch", "rhythm", "speech")

# pitch: fundamentals (Hz) about 8 semitones apart, outside every demo tonal f0 +- 5 %
PITCH_HZ = (185.0, 294.0, 466.0, 740.0)
PITCH_JITTER = 0.015  # per-instance pitch factor 1 +- this
_NOTE_HARMONICS, _NOTE_ROLLOFF, _NOTE_DECAY_S = 6, 1.2, 0.55

# rhythm: (cycle seconds, onsets within a cycle in seconds); one shared strike sound
RHYTHMS: tuple[tuple[float, tuple[float, ...]], ...] = (
    (0.55, (0.0,)),                 # slow steady
    (0.18, (0.0,)),                 # fast steady
    (0.60, (0.0, 0.13)),            # gallop: da-dum
    (0.80, (0.0, 0.09, 0.18)),      # triplet burst
)
RHYTHM_JITTER = 0.04  # per-instance tempo factor 1 +- this
STRIKE_PARTIALS_HZ = (830.0, 1370.0, 2270.0, 3610.0)  # inharmonic, not in any demo recipe
_STRIKE_DECAY_S = 0.045

# speech: vowel formants (F1, F2, F3) Hz and bandwidths; voice pitch random per instance
VOWELS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("a", (730.0, 1090.0, 2440.0)),
    ("i", (280.0, 2250.0, 3000.0)),
    ("u", (310.0, 870.0, 2250.0)),
    ("e", (530.0, 1840.0, 2480.0)),
)
_FORMANT_BW = (90.0, 110.0, 160.0)
VOICE_F0_HZ = (95.0, 240.0)
_MAX_HZ = 7200.0


def _unit(x: np.ndarray) -> np.ndarray:
    r = float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0
    return x / r if r > 1e-12 else x


def _onsets(rng: np.random.Generator, seconds: float, gap: tuple[float, float]) -> np.ndarray:
    """Random onset times (s) from [0, seconds): the first in [0, gap[0]), then gaps in gap."""
    out, t = [], float(rng.uniform(0, gap[0]))
    while t < seconds:
        out.append(t)
        t += float(rng.uniform(*gap))
    return np.asarray(out)


def pitch_note(k: int, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Class ``k`` of the pitch family: notes at ``PITCH_HZ[k]`` -> (S,) unit RMS."""
    t = np.arange(num_samples) / SAMPLE_RATE
    f0 = PITCH_HZ[k] * (1 + rng.uniform(-PITCH_JITTER, PITCH_JITTER))
    tone = np.zeros(num_samples)
    for n in range(1, _NOTE_HARMONICS + 1):
        if n * f0 > _MAX_HZ:
            break
        tone += n ** -_NOTE_ROLLOFF * np.sin(2 * math.pi * n * f0 * t + rng.uniform(0, 2 * math.pi))
    env = np.zeros(num_samples)
    for onset in _onsets(rng, num_samples / SAMPLE_RATE, (0.35, 0.9)):
        tau = t - onset
        env = np.maximum(env, np.where(tau >= 0, np.clip(tau / 0.01, 0, 1)
                                       * np.exp(-np.maximum(tau, 0) / _NOTE_DECAY_S), 0))
    return _unit(tone * (0.08 + env))  # a faint sustain between strikes


def _strike(rng: np.random.Generator) -> np.ndarray:
    """The rhythm family's one strike: (L,) float64, ~0.25 s, the same spectrum every time."""
    L = int(0.25 * SAMPLE_RATE)
    t = np.arange(L) / SAMPLE_RATE
    partials = sum(np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi)) / (i + 1)
                   for i, f in enumerate(STRIKE_PARTIALS_HZ))
    return np.asarray(partials) * np.clip(t / 0.002, 0, 1) * np.exp(-t / _STRIKE_DECAY_S)


def rhythm_pattern(k: int, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Class ``k`` of the rhythm family: the strike at ``RHYTHMS[k]``'s onsets -> (S,) unit RMS."""
    cycle, hits = RHYTHMS[k]
    tempo = 1 + rng.uniform(-RHYTHM_JITTER, RHYTHM_JITTER)
    cycle, hits = cycle * tempo, tuple(h * tempo for h in hits)
    strike = _strike(rng)
    out = np.zeros(num_samples + len(strike))
    start = -float(rng.uniform(0, cycle))  # random phase of the pattern
    while start < num_samples / SAMPLE_RATE:
        for h in hits:
            i = round((start + h) * SAMPLE_RATE)
            if 0 <= i < num_samples:
                out[i:i + len(strike)] += strike
        start += cycle
    return _unit(out[:num_samples])


def _formant_gain(freqs: np.ndarray, formants: tuple[float, float, float]) -> np.ndarray:
    """Amplitude of the vowel filter at freqs (any shape): a sum of resonance peaks."""
    gain = np.zeros_like(freqs)
    for f, bw, level in zip(formants, _FORMANT_BW, (1.0, 0.7, 0.35)):
        gain += level / np.sqrt(1 + ((freqs - f) / (bw / 2)) ** 2)
    return gain


def speech_vowel(k: int, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Class ``k`` of the speech family: syllables of vowel ``VOWELS[k]`` -> (S,) unit RMS.

    A voice with a random pitch (in :data:`VOICE_F0_HZ`) and a falling-rising contour; each
    harmonic's amplitude follows the formant filter at its instantaneous frequency.
    """
    t = np.arange(num_samples) / SAMPLE_RATE
    base = float(rng.uniform(*VOICE_F0_HZ))
    contour = 1 + 0.08 * np.sin(2 * math.pi * float(rng.uniform(0.2, 0.6)) * t
                                + rng.uniform(0, 2 * math.pi))
    f0 = base * contour  # (S,)
    phase = 2 * math.pi * np.cumsum(f0) / SAMPLE_RATE
    formants = VOWELS[k][1]
    voiced = np.zeros(num_samples)
    for n in range(1, int(_MAX_HZ / (base * 1.1)) + 1):
        voiced += _formant_gain(n * f0, formants) / n ** 0.5 * np.sin(n * phase)
    env = np.zeros(num_samples)
    for onset in _onsets(rng, num_samples / SAMPLE_RATE, (0.22, 0.45)):
        length = float(rng.uniform(0.14, 0.3))
        u = (t - onset) / length
        env = np.maximum(env, np.where((u >= 0) & (u < 1), np.sin(math.pi * np.clip(u, 0, 1)), 0))
    return _unit(voiced * env)


_SYNTHS = {"pitch": pitch_note, "rhythm": rhythm_pattern, "speech": speech_vowel}


def family_sound(family: str, k: int, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Class ``k`` of ``family`` -> (num_samples,) float64 with unit RMS at 16 kHz."""
    if family not in _SYNTHS:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    return _SYNTHS[family](k, num_samples, rng)
