"""The "wide" synthetic style (pcmanet.data.synthetic_outlines, WIDE_OBJECT_CLASSES): procedural
silhouettes that differ from every named shape and from each other, sounds that differ along
one measured axis inside each group, and data sets that the AVSBench loader reads."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pcmanet.data import build_dataset
from pcmanet.data.eval_families import FAMILY_CLASSES
from pcmanet.data.eval_sounds import PITCH_HZ
from pcmanet.data.synthetic import write_dataset
from pcmanet.data.synthetic_classes import (
    STYLES,
    WIDE_OBJECT_CLASSES,
    WIDE_OUTLINES,
    SoundRecipe,
)
from pcmanet.data.synthetic_outlines import Outline, outline_parts
from pcmanet.data.synthetic_scene import object_mask, sample_instance, sample_motion
from pcmanet.data.synthetic_shapes import SHAPE_PARTS, Shape
from pcmanet.data.synthetic_sound import SAMPLE_RATE, Voice, synthesize

Parts = tuple[tuple[np.ndarray, bool], ...]
_S = 64


def _raster(parts: Parts, angle: float = 0.0, flip: bool = False, scale: float = 1.0
            ) -> np.ndarray:
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    m = np.zeros((_S, _S), np.uint8)
    for poly, filled in parts:
        q = poly * np.array([-1.0 if flip else 1.0, 1.0]) @ rot.T * scale
        cv2.fillPoly(m, [np.round((q * _S * 0.3 + _S / 2) * 16).astype(np.int32)],
                     1 if filled else 0, cv2.LINE_8, 4)
    return m.astype(bool)


def _equal_area(parts: Parts) -> Parts:
    k = math.sqrt(_S * _S * 0.12 / _raster(parts).sum())
    return tuple((p * k, f) for p, f in parts)


def _similarity(a: Parts, b: Parts) -> float:
    """Best IoU of two silhouettes scaled to equal area, over 24 rotations and a mirror."""
    x = _raster(a)
    best = 0.0
    for angle in np.linspace(0, 2 * math.pi, 24, endpoint=False):
        for flip in (False, True):
            y = _raster(b, float(angle), flip)
            best = max(best, float((x & y).sum() / (x | y).sum()))
    return best


def test_outlines_are_deterministic_centred_and_unit_sized() -> None:
    for index in (0, 1, 2, 3, 17):
        parts = outline_parts(Outline(index))
        again = outline_parts.__wrapped__(Outline(index))  # computed afresh, not cached
        assert all(np.array_equal(p, q) and f == g for (p, f), (q, g) in zip(parts, again))
        reach = max(float(np.hypot(*p.T).max()) for p, _ in parts)
        assert reach == pytest.approx(1.05)
        mask = _raster(parts)
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - _S / 2) < 2.5 and abs(ys.mean() - _S / 2) < 2.5  # centroid
    assert Outline(1).kind != Outline(2).kind and Outline(0).kind == Outline(4).kind
    assert not np.array_equal(outline_parts(Outline(0))[0][0], outline_parts(Outline(4))[0][0])


def test_wide_outlines_differ_from_named_shapes_and_each_other() -> None:
    """No wide silhouette is closer to a named shape (the evaluation families' and the other
    styles' included) or to another wide one than 0.85 IoU at its best rotation, mirror and
    equal area; for scale, the named disc and hexagon are 0.92 alike, house and square 0.86."""
    named = {s.value: _equal_area(SHAPE_PARTS[s]) for s in Shape}
    assert _similarity(named["disc"], named["hexagon"]) > 0.85  # the measure sees likeness
    wide = [_equal_area(outline_parts(Outline(i))) for i in WIDE_OUTLINES]
    family = {c.shape.value for cs in FAMILY_CLASSES.values() for c in cs}
    assert family <= set(named)
    for i, parts in enumerate(wide):
        for name, other in named.items():
            assert _similarity(parts, other) <= 0.85, (WIDE_OUTLINES[i], name)
        for j in range(i):
            assert _similarity(parts, wide[j]) <= 0.85, (WIDE_OUTLINES[i], WIDE_OUTLINES[j])


def test_wide_classes_are_new_and_grouped_by_one_sound_axis() -> None:
    classes = WIDE_OBJECT_CLASSES
    assert STYLES["wide"] is classes and len(classes) == 32
    assert len({c.name for c in classes}) == 32 and len({c.shape for c in classes}) == 32
    others = [c for style, cs in STYLES.items() if style != "wide" for c in cs]
    assert not {c.name for c in classes} & {c.name for c in others}
    assert not {c.sound for c in classes} & {c.sound for c in others}
    assert all(isinstance(c.shape, Outline) for c in classes)
    fields = [f.name for f in dataclasses.fields(SoundRecipe)]
    for g in range(8):
        group = [c.sound for c in classes[4 * g:4 * g + 4]]
        varying = {f for f in fields if len({getattr(s, f) for s in group}) > 1}
        assert len(varying) == 1, (g, varying)
    pitches = [c.sound.f0 for c in classes if c.sound.f0 > 0]
    assert min(abs(math.log(p / q)) for p in pitches for q in PITCH_HZ) > math.log(1.06)


def _envelope(x: np.ndarray, hop: int = 160) -> np.ndarray:
    """RMS per 10 ms frame."""
    n = len(x) // hop
    return np.sqrt(np.square(x[:n * hop].reshape(n, hop)).mean(1))


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def _centroid_hz(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float((np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE) * power).sum() / power.sum())


def _onsets_per_s(x: np.ndarray) -> float:
    env = _envelope(x)
    on = env > 0.3 * env.max()
    return float(np.count_nonzero(on[1:] & ~on[:-1]) / (len(x) / SAMPLE_RATE))


def _modulation_hz(x: np.ndarray) -> float:
    env = _envelope(x)
    spectrum = np.abs(np.fft.rfft(env - env.mean()))
    freqs = np.fft.rfftfreq(len(env), 0.01)
    spectrum[freqs < 0.25] = 0
    return float(freqs[np.argmax(spectrum)])


@pytest.mark.parametrize("group", range(8))
def test_each_sound_group_differs_along_its_axis(group: int) -> None:
    """Measured on 10 s of each class's sound with a random voice (pitch +-5 %, rate +-10 %):
    the fundamental (pitch groups), onsets per second (pulse groups), spectral centroid (noise
    band, brightness) or envelope modulation rate (tremolo) is near its recipe's value and
    ordered across the group's four classes."""
    rng = np.random.default_rng(group)
    classes = WIDE_OBJECT_CLASSES[4 * group:4 * group + 4]
    kind = classes[0].name.split("_")[1].split("-")[0]
    measured, nominal = [], []
    for cls in classes:
        obj = sample_instance(cls, sample_motion(rng, (0.5, 0.5), 0.1, 0.0), rng)
        x = synthesize(cls.sound, obj.voice, 10 * SAMPLE_RATE, rng)
        v: Voice = obj.voice
        r = cls.sound
        if kind in ("tone", "note", "whistle"):
            measured.append(_peak_hz(x))
            nominal.append(r.f0 * v.pitch)
        elif kind in ("knock", "beep"):
            measured.append(_onsets_per_s(x))
            nominal.append(r.pulse_hz * v.rate)
        elif kind == "tremolo":
            measured.append(_modulation_hz(x))
            nominal.append(r.am_hz * v.rate)
        else:  # noise, buzz: where the energy sits
            measured.append(_centroid_hz(x))
            nominal.append(float(np.sqrt(np.prod(r.noise_band))) if kind == "noise" else 0.0)
    if kind == "buzz":  # more rolloff, darker
        assert measured == sorted(measured, reverse=True), measured
        assert measured[0] > 1.5 * measured[-1]
        return
    assert measured == sorted(measured), (kind, measured)
    tolerance = 0.5 if kind == "noise" else 0.15  # a band's centroid vs its geometric centre
    for m, n in zip(measured, nominal):
        assert abs(math.log(m / n)) < tolerance, (kind, m, n)


def test_every_wide_class_renders_a_compact_silhouette() -> None:
    rng = np.random.default_rng(5)
    for cls in WIDE_OBJECT_CLASSES:
        obj = sample_instance(cls, sample_motion(rng, (0.5, 0.5), 0.25, 0.0), rng)
        area = object_mask(obj, 0.0, 128).mean() / (np.pi * 0.25**2)
        assert 0.2 < area < 1.3, (cls.name, area)


@pytest.fixture(scope="module")
def wide_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wide")
    write_dataset(root, "s4", {"train": 6, "val": 2, "test": 2}, size=64, seed=4, style="wide",
                  random_hue=1.0)
    return root


def test_wide_sets_read_with_the_loader_and_repeat(wide_data: Path, tmp_path: Path) -> None:
    names = {c.name for c in WIDE_OBJECT_CLASSES}
    ds = build_dataset("s4", wide_data, "train", image_size=64)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        assert item["category"] in names and item["masks"][0].sum() > 20
    again = tmp_path / "again"
    write_dataset(again, "s4", {"train": 6, "val": 2, "test": 2}, size=64, seed=4, style="wide",
                  random_hue=1.0)
    files = lambda r: {p.relative_to(r): p.read_bytes()  # noqa: E731
                       for p in sorted(r.rglob("*")) if p.is_file()}
    assert files(again) == files(wide_data)
