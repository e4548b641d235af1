"""Synthetic sounding-objects world: object classes, their sounds, scene sampling and rendering.

Shared by the AVSBench-layout data set writer (:mod:`pcmanet.data.synthetic`) and the live
:class:`~pcmanet.data.synthetic.DemoScene`, so a model trained on one segments the other.

* 8 :class:`ObjectClass` es, each with its own shape, texture, hue and :class:`SoundRecipe`
  (:data:`OBJECT_CLASSES`, style "shapes"), and a disjoint second set of 8 with other shapes,
  textures and sounds (:data:`ALT_OBJECT_CLASSES`, style "alt"); :data:`STYLES` names both.
* :class:`ObjectInstance`: a class plus per-instance colours, texture period, smooth
  :class:`Motion` and :class:`Voice` (pitch +-5 %, rate +-10 %, brightness, rhythm offset).
* :func:`render`: background + objects in depth order -> (H, W, 3) uint8 BGR image and the
  *visible* (N, H, W) bool mask of every object at time t.
* :func:`synthesize` (unit-RMS sound of one object) and :func:`background_noise` (pink, brown or
  babble-like, unit RMS), mixed by the callers at an SNR.
"""

from __future__ import annotations

import colorsys
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

SAMPLE_RATE = 16000  # Hz, as AVSBench's wavs and VGGish
CLIP_SECONDS = 5
# AVSBench frame k (1-based) is the 16th of 16 samples of second k-1: t = k - 1 + 15/16 s.
FRAME_TIMES = tuple(k - 1 + 15 / 16 for k in range(1, CLIP_SECONDS + 1))
_MAX_PARTIAL_HZ = 7200.0  # keep partials below Nyquist (8 kHz) and VGGish's 7.5 kHz top band
_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point shift


class Shape(enum.Enum):
    """Silhouettes; each is a list of (unit polygon, filled) parts, see :data:`SHAPE_PARTS`."""

    DISC = "disc"
    SQUARE = "square"
    TRIANGLE = "triangle"
    STAR = "star"
    RING = "ring"
    CROSS = "cross"
    HEXAGON = "hexagon"
    CRESCENT = "crescent"
    # style "alt"
    ELLIPSE = "ellipse"
    RHOMBUS = "rhombus"
    ARROW = "arrow"
    HEART = "heart"
    BOWTIE = "bowtie"
    CHEVRON = "chevron"
    ELL = "ell"  # L shape
    KEYHOLE = "keyhole"


class Texture(enum.Enum):
    """Surface patterns, evaluated in object coordinates so they move with the object."""

    SOLID = "solid"
    STRIPES = "stripes"
    CHECKER = "checker"
    DOTS = "dots"
    GRADIENT = "gradient"
    # style "alt"
    RIPPLES = "ripples"  # concentric rings
    HATCH = "hatch"  # thin diagonal cross-hatch lines
    SPOTS = "spots"  # dots of three sizes


class NoiseKind(enum.Enum):
    """Background noise colours for :func:`background_noise`."""

    PINK = "pink"
    BROWN = "brown"
    BABBLE = "babble"


@dataclass(frozen=True)
class SoundRecipe:
    """A class's sound: tonal partials plus band noise, gated by a pulse train and modulated.

    Partial n (1-based) has frequency ``f0 n sqrt(1 + inharmonic n^2)`` and amplitude
    ``n ** -rolloff``; ``noise_mix`` blends unit-RMS tonal and band-noise parts (0 tonal, 1 noise).
    ``pulse_hz > 0`` gates the sound into pulses of ``duty`` of each period, each decaying with
    ``decay_s`` and chirping up by ``sweep_octaves``; vibrato and amplitude modulation are
    sinusoidal. Rates scale with the instance's :class:`Voice`.
    """

    f0: float = 0.0
    harmonics: int = 1
    rolloff: float = 1.0
    inharmonic: float = 0.0
    vibrato_hz: float = 0.0
    vibrato_depth: float = 0.0  # fraction of f0
    sweep_octaves: float = 0.0
    noise_band: tuple[float, float] = (300.0, 3000.0)  # Hz
    noise_mix: float = 0.0
    pulse_hz: float = 0.0
    duty: float = 1.0
    decay_s: float = 0.0  # 0: flat pulses
    am_hz: float = 0.0
    am_depth: float = 0.0


@dataclass(frozen=True)
class ObjectClass:
    """A sounding-object class: name (AVSBench-style category), look and sound."""

    name: str
    shape: Shape
    texture: Texture
    hue: float  # degrees
    sound: SoundRecipe


OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("disc_hum", Shape.DISC, Texture.SOLID, 0.0, SoundRecipe(
        f0=240, harmonics=8, rolloff=0.9, vibrato_hz=5.0, vibrato_depth=0.01,
        am_hz=0.7, am_depth=0.3)),
    ObjectClass("square_buzzer", Shape.SQUARE, Texture.STRIPES, 220.0, SoundRecipe(
        f0=95, harmonics=28, rolloff=0.6, pulse_hz=3.0, duty=0.6)),
    ObjectClass("triangle_chirp", Shape.TRIANGLE, Texture.CHECKER, 120.0, SoundRecipe(
        f0=1200, harmonics=2, rolloff=2.0, sweep_octaves=1.0, pulse_hz=4.0, duty=0.5)),
    ObjectClass("star_clip-clop", Shape.STAR, Texture.DOTS, 55.0, SoundRecipe(
        noise_band=(4000.0, 7000.0), noise_mix=1.0, pulse_hz=5.0, duty=0.25, decay_s=0.025)),
    ObjectClass("ring_bell", Shape.RING, Texture.GRADIENT, 280.0, SoundRecipe(
        f0=520, harmonics=7, rolloff=0.7, inharmonic=0.04, pulse_hz=1.25, duty=0.95,
        decay_s=0.3)),
    ObjectClass("cross_siren", Shape.CROSS, Texture.STRIPES, 28.0, SoundRecipe(
        f0=800, harmonics=3, rolloff=1.5, vibrato_hz=0.6, vibrato_depth=0.3)),
    ObjectClass("hexagon_rumble", Shape.HEXAGON, Texture.CHECKER, 175.0, SoundRecipe(
        f0=60, harmonics=5, rolloff=1.0, noise_band=(80.0, 350.0), noise_mix=0.7,
        am_hz=2.0, am_depth=0.6)),
    ObjectClass("crescent_whistle", Shape.CRESCENT, Texture.DOTS, 325.0, SoundRecipe(
        f0=2900, harmonics=2, rolloff=2.5, vibrato_hz=7.0, vibrato_depth=0.03,
        noise_band=(2500.0, 4000.0), noise_mix=0.2, pulse_hz=1.6, duty=0.7)),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in OBJECT_CLASSES)

# A disjoint second set: no shape, name or sound of OBJECT_CLASSES, for fine-tuning on objects a
# model trained on the default style has never seen.
ALT_OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("ellipse_pluck", Shape.ELLIPSE, Texture.RIPPLES, 15.0, SoundRecipe(
        f0=196, harmonics=10, rolloff=1.8, inharmonic=0.001, pulse_hz=2.5, duty=0.9,
        decay_s=0.09)),
    ObjectClass("rhombus_tom-tom", Shape.RHOMBUS, Texture.HATCH, 60.0, SoundRecipe(
        f0=75, harmonics=4, rolloff=1.5, sweep_octaves=-0.6, noise_band=(50.0, 300.0),
        noise_mix=0.5, pulse_hz=2.0, duty=0.45, decay_s=0.07)),
    ObjectClass("arrow_tremolo", Shape.ARROW, Texture.STRIPES, 105.0, SoundRecipe(
        f0=440, harmonics=5, rolloff=1.0, noise_band=(400.0, 3000.0), noise_mix=0.2, am_hz=12.0,
        am_depth=0.9)),
    ObjectClass("heart_coo", Shape.HEART, Texture.SPOTS, 150.0, SoundRecipe(
        f0=330, harmonics=4, rolloff=1.4, sweep_octaves=-0.25, pulse_hz=0.8, duty=0.8)),
    ObjectClass("bowtie_hiss", Shape.BOWTIE, Texture.GRADIENT, 195.0, SoundRecipe(
        noise_band=(5000.0, 7200.0), noise_mix=1.0, am_hz=0.4, am_depth=0.8)),
    ObjectClass("chevron_falling-whistle", Shape.CHEVRON, Texture.DOTS, 240.0, SoundRecipe(
        f0=1800, harmonics=2, rolloff=2.0, sweep_octaves=-1.5, pulse_hz=1.4, duty=0.85)),
    ObjectClass("ell_ticking", Shape.ELL, Texture.CHECKER, 285.0, SoundRecipe(
        noise_band=(1000.0, 2500.0), noise_mix=1.0, pulse_hz=8.0, duty=0.3, decay_s=0.02)),
    ObjectClass("keyhole_trill", Shape.KEYHOLE, Texture.RIPPLES, 330.0, SoundRecipe(
        f0=950, harmonics=3, rolloff=1.5, vibrato_hz=14.0, vibrato_depth=0.06,
        noise_band=(800.0, 3000.0), noise_mix=0.15, pulse_hz=0.7, duty=0.75)),
)
DEFAULT_STYLE = "shapes"
STYLES: dict[str, tuple[ObjectClass, ...]] = {"shapes": OBJECT_CLASSES, "alt": ALT_OBJECT_CLASSES}


def style_classes(style: str) -> tuple[ObjectClass, ...]:
    """The object classes of a style ("shapes": :data:`OBJECT_CLASSES`, "alt":
    :data:`ALT_OBJECT_CLASSES`); ValueError naming the valid styles for any other name."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid styles: {', '.join(STYLES)}")
    return STYLES[style]


def _regular(n: int, radius: float, start: float = -math.pi / 2) -> np.ndarray:
    a = start + 2 * math.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], 1) * radius  # (n, 2)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return _regular(2 * points, 1.0) * radii[:, None]  # (2 points, 2)


def _ellipse(rx: float, ry: float, n: int = 64) -> np.ndarray:
    return _regular(n, 1.0) * np.array([rx, ry])  # (n, 2)


def _centred(poly: np.ndarray) -> np.ndarray:
    """(n, 2) simple polygon moved so that its area centroid is the origin (rotation centre)."""
    nxt = np.roll(poly, -1, axis=0)  # (n, 2) next vertex
    cross = poly[:, 0] * nxt[:, 1] - nxt[:, 0] * poly[:, 1]  # (n,) shoelace terms
    centroid = ((poly + nxt) * cross[:, None]).sum(0) / (3 * cross.sum())  # (2,)
    return poly - centroid


def _heart(n: int = 64, radius: float = 1.05) -> np.ndarray:
    """(n, 2) heart curve, point down in image coordinates, scaled to ``radius``."""
    a = 2 * math.pi * np.arange(n) / n
    x = 16 * np.sin(a) ** 3
    y = -(13 * np.cos(a) - 5 * np.cos(2 * a) - 2 * np.cos(3 * a) - np.cos(4 * a))  # image y down
    poly = _centred(np.stack([x, y], 1))
    return poly * radius / np.hypot(*poly.T).max()


_CROSS = np.array([(-0.32, -1), (0.32, -1), (0.32, -0.32), (1, -0.32), (1, 0.32), (0.32, 0.32),
                   (0.32, 1), (-0.32, 1), (-0.32, 0.32), (-1, 0.32), (-1, -0.32), (-0.32, -0.32)])
_ARROW = _centred(np.array([(-1.0, -0.24), (0.15, -0.24), (0.15, -0.62), (1.05, 0.0),
                            (0.15, 0.62), (0.15, 0.24), (-1.0, 0.24)]))
_BOWTIE = np.array([(-0.85, -1.0), (0.85, -1.0), (0.16, 0.0), (0.85, 1.0), (-0.85, 1.0),
                    (-0.16, 0.0)])  # hourglass with a narrow waist
_CHEVRON = _centred(np.array([(0.0, -0.8), (1.0, 0.25), (1.0, 0.8), (0.0, -0.15), (-1.0, 0.8),
                              (-1.0, 0.25)]))
_ELL = _centred(np.array([(-0.75, -1.05), (-0.15, -1.05), (-0.15, 0.45), (0.85, 0.45),
                          (0.85, 1.05), (-0.75, 1.05)]))
# Unit-radius parts drawn in order: True fills, False cuts a hole (each object has its own mask).
SHAPE_PARTS: dict[Shape, tuple[tuple[np.ndarray, bool], ...]] = {
    Shape.DISC: ((_regular(64, 0.92), True),),
    Shape.SQUARE: ((_regular(4, 1.1, math.pi / 4), True),),
    Shape.TRIANGLE: ((_regular(3, 1.1) + np.array([0.0, 0.2]), True),),
    Shape.STAR: ((_star(5, 1.1, 0.48), True),),
    Shape.RING: ((_regular(64, 1.0), True), (_regular(64, 0.55), False)),
    Shape.CROSS: ((_CROSS, True),),
    Shape.HEXAGON: ((_regular(6, 0.98, 0.0), True),),
    Shape.CRESCENT: ((_regular(64, 1.0), True),
                     (_regular(64, 0.82) + np.array([0.45, -0.1]), False)),
    Shape.ELLIPSE: ((_ellipse(1.05, 0.55), True),),
    Shape.RHOMBUS: ((np.array([(0.0, -1.12), (0.62, 0.0), (0.0, 1.12), (-0.62, 0.0)]), True),),
    Shape.ARROW: ((_ARROW, True),),
    Shape.HEART: ((_heart(), True),),
    Shape.BOWTIE: ((_BOWTIE, True),),
    Shape.CHEVRON: ((_CHEVRON, True),),
    Shape.ELL: ((_ELL, True),),
    Shape.KEYHOLE: ((_regular(48, 0.5) + np.array([0.0, -0.45]), True),  # head and flared foot
                    (np.array([(-0.2, -0.3), (0.2, -0.3), (0.48, 1.0), (-0.48, 1.0)]), True)),
}


@dataclass(frozen=True)
class Motion:
    """Smooth quasi-periodic motion in frame-relative units: centre, radius and angle at time t.

    ``x(t) = cx + ax sin(2 pi fx t + px)`` (same for y), ``radius(t) = r (1 + s sin(2 pi fs t +
    ps))``, ``angle(t) = a0 + spin t``. Positions and radius are fractions of the frame size.
    """

    centre: tuple[float, float]
    amp: tuple[float, float]
    freq: tuple[float, float]  # Hz
    phase: tuple[float, float]
    radius: float
    scale_amp: float
    scale_freq: float
    scale_phase: float
    angle: float  # rad
    spin: float  # rad / s

    def at(self, t: float) -> tuple[float, float, float, float]:
        """(x, y, radius, angle) at time t seconds; x, y, radius relative to the frame size."""
        x = self.centre[0] + self.amp[0] * math.sin(2 * math.pi * self.freq[0] * t + self.phase[0])
        y = self.centre[1] + self.amp[1] * math.sin(2 * math.pi * self.freq[1] * t + self.phase[1])
        s = 1 + self.scale_amp * math.sin(2 * math.pi * self.scale_freq * t + self.scale_phase)
        return x, y, self.radius * s, self.angle + self.spin * t


def sample_motion(rng: np.random.Generator, centre: tuple[float, float], radius: float,
                  amp: float, freq: tuple[float, float] = (0.04, 0.15)) -> Motion:
    """Random :class:`Motion` around ``centre`` with per-axis amplitude up to ``amp``."""
    return Motion(
        centre=centre,
        amp=(float(rng.uniform(0.3, 1.0) * amp), float(rng.uniform(0.3, 1.0) * amp)),
        freq=(float(rng.uniform(*freq)), float(rng.uniform(*freq))),
        phase=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
        radius=radius,
        scale_amp=float(rng.uniform(0.0, 0.15)),
        scale_freq=float(rng.uniform(0.05, 0.2)),
        scale_phase=float(rng.uniform(0, 2 * math.pi)),
        angle=float(rng.uniform(0, 2 * math.pi)),
        spin=float(rng.uniform(-0.3, 0.3)),
    )


@dataclass(frozen=True)
class Voice:
    """Per-instance sound variation: pitch factor, rate factor, rolloff change, rhythm offset."""

    pitch: float = 1.0
    rate: float = 1.0
    brightness: float = 0.0  # added to -rolloff
    offset: float = 0.0  # fraction of a pulse period / modulation cycle


@dataclass(frozen=True)
class ObjectInstance:
    """One object in a scene: class, colours (BGR 0..255), texture period, motion and voice."""

    cls: ObjectClass
    colours: tuple[tuple[float, float, float], tuple[float, float, float]]
    period: float  # texture period in units of the object radius
    motion: Motion
    voice: Voice


def _bgr(h_deg: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360) / 360, min(max(s, 0.0), 1.0), min(v, 1.0))
    return 255 * b, 255 * g, 255 * r


def sample_instance(cls: ObjectClass, motion: Motion, rng: np.random.Generator) -> ObjectInstance:
    """Random colours, texture period and voice for an object of class ``cls``."""
    hue = cls.hue + rng.uniform(-10, 10)
    sat, val = rng.uniform(0.6, 0.95), rng.uniform(0.75, 1.0)
    primary = _bgr(hue, sat, val)
    dark = bool(rng.random() < 0.5)
    secondary = _bgr(hue, sat, val * 0.35) if dark else _bgr(hue, sat * 0.2, 0.97)
    voice = Voice(pitch=float(rng.uniform(0.95, 1.05)), rate=float(rng.uniform(0.9, 1.1)),
                  brightness=float(rng.uniform(-0.15, 0.15)), offset=float(rng.random()))
    return ObjectInstance(cls, (primary, secondary), float(rng.uniform(0.3, 0.5)), motion, voice)


# ---------------------------------------------------------------------------------------------
# Rendering


def random_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) uint8 BGR: smooth gradient + low-frequency noise + non-object clutter."""
    c0, c1 = (np.array(_bgr(rng.uniform(0, 360), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.9)))
              for _ in range(2))
    a = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, size)
    w = np.clip(0.5 + math.cos(a) * ramp[None, :] + math.sin(a) * ramp[:, None], 0, 1)  # (H, W)
    gradient = c0 * (1 - w[..., None]) + c1 * w[..., None]  # (H, W, 3) float
    g = int(rng.integers(3, 7))
    low = cv2.resize(rng.uniform(-1, 1, (g, g, 3)), (size, size), interpolation=cv2.INTER_CUBIC)
    img: np.ndarray = np.clip(gradient + low * rng.uniform(10, 45), 0, 255).astype(np.uint8)
    overlay = img.copy()
    for _ in range(int(rng.integers(0, 5))):  # elongated translucent bars: never a square
        long_, short = rng.uniform(0.3, 0.9) * size, rng.uniform(0.02, 0.08) * size
        w_, h_ = (long_, short) if rng.random() < 0.5 else (short, long_)
        x0, y0 = rng.uniform(-0.1, 0.9) * size, rng.uniform(-0.1, 0.9) * size
        colour = _bgr(rng.uniform(0, 360), rng.uniform(0, 0.6), rng.uniform(0.2, 1.0))
        cv2.rectangle(overlay, (int(x0), int(y0)), (int(x0 + w_), int(y0 + h_)), colour, -1)
    img = cv2.addWeighted(img, 0.55, overlay, 0.45, 0.0)
    for _ in range(int(rng.integers(0, 7))):  # thin lines
        p0, p1 = (tuple(int(v) for v in rng.uniform(0, size, 2)) for _ in range(2))
        colour = _bgr(rng.uniform(0, 360), rng.uniform(0, 0.7), rng.uniform(0.1, 1.0))
        cv2.line(img, p0, p1, colour, int(rng.integers(1, max(2, size // 75) + 1)), cv2.LINE_AA)
    return img


def _pose(obj: ObjectInstance, t: float, size: int) -> tuple[float, float, float, float]:
    x, y, r, a = obj.motion.at(t)
    return x * size, y * size, r * size, a


def object_mask(obj: ObjectInstance, t: float, size: int) -> np.ndarray:
    """(size, size) bool silhouette of ``obj`` at time t (occlusion not applied)."""
    cx, cy, r, a = _pose(obj, t, size)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * r
    mask = np.zeros((size, size), np.uint8)
    scale = 1 << _SUBPIXEL_BITS
    for poly, filled in SHAPE_PARTS[obj.cls.shape]:
        pts = (poly @ rot.T + (cx - 0.5, cy - 0.5)) * scale  # pixel centres at integers
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1 if filled else 0,
                     cv2.LINE_8, _SUBPIXEL_BITS)
    return mask.astype(bool)


def visible_masks(objects: Sequence[ObjectInstance], t: float, size: int) -> np.ndarray:
    """(N, size, size) bool visible region of each object; later objects are drawn on top."""
    full = np.stack([object_mask(o, t, size) for o in objects]) if objects else \
        np.zeros((0, size, size), bool)
    covered = np.zeros((size, size), bool)
    visible = np.empty_like(full)
    for i in range(len(objects) - 1, -1, -1):  # top-down
        visible[i] = full[i] & ~covered
        covered |= full[i]
    return visible


def _texture_weight(tex: Texture, u: np.ndarray, v: np.ndarray, p: float) -> np.ndarray:
    """(h, w) float64 weight in [0, 1] of the secondary colour at object coordinates u, v (h, w)
    (unit object radius), for texture period p in object radii."""
    if tex is Texture.STRIPES:
        return (np.sin(2 * math.pi * u / p) > 0).astype(np.float64)
    if tex is Texture.CHECKER:
        return ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float64)
    if tex is Texture.DOTS:
        du, dv = u / p - np.floor(u / p) - 0.5, v / p - np.floor(v / p) - 0.5
        return (du**2 + dv**2 < 0.09).astype(np.float64)
    if tex is Texture.GRADIENT:
        return np.clip((u + 1) / 2, 0, 1)
    if tex is Texture.RIPPLES:  # rings around the object centre, half a period wide
        return (np.sin(2 * math.pi * np.hypot(u, v) / p) > 0).astype(np.float64)
    if tex is Texture.HATCH:  # lines a quarter period wide along both diagonals
        a, b = (u + v) / p, (u - v) / p
        return ((a - np.floor(a) < 0.25) | (b - np.floor(b) < 0.25)).astype(np.float64)
    if tex is Texture.SPOTS:  # one dot per cell, radius 0.15, 0.25 or 0.35 periods by cell
        i, j = np.floor(u / p), np.floor(v / p)
        du, dv = u / p - i - 0.5, v / p - j - 0.5
        radius = 0.15 + 0.1 * ((i + 2 * j) % 3)
        return (du**2 + dv**2 < radius**2).astype(np.float64)
    return np.zeros_like(u)


def _paint(image: np.ndarray, obj: ObjectInstance, mask: np.ndarray, t: float) -> None:
    """Fill ``mask`` (H, W) bool of ``image`` with the object's texture, in place."""
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if len(ys) == 0:
        return
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    cx, cy, r, a = _pose(obj, t, image.shape[0])
    dx = np.arange(x0, x1)[None, :] - cx  # (1, w)
    dy = np.arange(y0, y1)[:, None] - cy  # (h, 1)
    u = (math.cos(a) * dx + math.sin(a) * dy) / r  # (h, w) object coordinates, radius 1
    v = (-math.sin(a) * dx + math.cos(a) * dy) / r
    w = _texture_weight(obj.cls.texture, u, v, obj.period)
    shade = 1.0 - 0.2 * np.minimum(u**2 + v**2, 1.5)  # dome shading
    c0, c1 = np.array(obj.colours[0]), np.array(obj.colours[1])
    colour = (c0 * (1 - w[..., None]) + c1 * w[..., None]) * shade[..., None]  # (h, w, 3)
    region, m = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    region[m] = np.clip(colour[m], 0, 255).astype(np.uint8)


def render(background: np.ndarray, objects: Sequence[ObjectInstance], t: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Frame at time t: background (H, W, 3) uint8 BGR -> (image (H, W, 3) uint8 BGR, visible
    masks (N, H, W) bool). Objects are drawn in list order, the last one on top."""
    size = background.shape[0]
    masks = visible_masks(objects, t, size)
    image = background.copy()
    for obj, mask in zip(objects, masks):
        _paint(image, obj, mask, t)
    return image, masks


# ---------------------------------------------------------------------------------------------
# Sound


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


def mix_clip(sources: Sequence[ObjectInstance], num_samples: int, rng: np.random.Generator
             ) -> np.ndarray:
    """A clip's soundtrack: the sounding objects (each at a random loudness, 0-6 dB down) over
    background noise at a random SNR, peak-normalised below clipping -> (S,) float64 in (-1, 1).

    With no sources the clip is background noise only, at a lower level.
    """
    mix = np.zeros(num_samples)
    for obj in sources:
        loud = rng.uniform(0.5, 1.0) if len(sources) > 1 else 1.0
        mix += loud * synthesize(obj.cls.sound, obj.voice, num_samples, rng)
    noise = background_noise(num_samples, rng, sample_noise_kind(rng))
    if sources:
        mix += noise * _rms(mix) / 10 ** (rng.uniform(*SNR_DB) / 20)
        peak = rng.uniform(*PEAK)
    else:
        mix, peak = noise, rng.uniform(*SILENT_PEAK)
    return mix * (peak / max(float(np.abs(mix).max()), 1e-12))
