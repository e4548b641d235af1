"""Synthetic sounding-objects world: scene objects, their motion, rendering and the clip mix.

Shared by the AVSBench-layout data set writer (:mod:`pcmanet.data.synthetic`) and the live
:class:`~pcmanet.data.synthetic.DemoScene`, so a model trained on one segments the other. The
classes (look and sound recipe) are in :mod:`pcmanet.data.synthetic_classes`, their silhouettes
in :mod:`pcmanet.data.synthetic_shapes`, sound synthesis in :mod:`pcmanet.data.synthetic_sound`.

* :class:`ObjectInstance`: a class plus per-instance colours, texture period, smooth
  :class:`Motion` and :class:`~pcmanet.data.synthetic_sound.Voice` (pitch +-5 %, rate +-10 %,
  brightness, rhythm offset).
* :func:`render`: background + objects in depth order -> (H, W, 3) uint8 BGR image and the
  *visible* (N, H, W) bool mask of every object at time t.
* :func:`mix_clip`: the sounding objects over background noise at an SNR.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .synthetic_classes import ObjectClass, Texture
from .synthetic_outlines import Outline, outline_parts
from .synthetic_shapes import SHAPE_PARTS
from .synthetic_sound import (
    PEAK,
    SILENT_PEAK,
    SNR_DB,
    Voice,
    _rms,
    background_noise,
    sample_noise_kind,
    synthesize,
)

CLIP_SECONDS = 5
# AVSBench frame k (1-based) is the 16th of 16 samples of second k-1: t = k - 1 + 15/16 s.
FRAME_TIMES = tuple(k - 1 + 15 / 16 for k in range(1, CLIP_SECONDS + 1))
_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point shift


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
    shape = obj.cls.shape
    parts = outline_parts(shape) if isinstance(shape, Outline) else SHAPE_PARTS[shape]
    for poly, filled in parts:
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
    if tex is Texture.WAVES:  # bands along u, bent by a sine of v
        return (np.sin(2 * math.pi * (u + 0.25 * p * np.sin(2 * math.pi * v / p)) / p) > 0
                ).astype(np.float64)
    if tex is Texture.GRID:  # lines a fifth of a period wide along u and v
        a, b = u / p, v / p
        return ((a - np.floor(a) < 0.2) | (b - np.floor(b) < 0.2)).astype(np.float64)
    if tex is Texture.SECTORS:  # 8 pie slices
        return (np.floor(4 * (np.arctan2(v, u) / math.pi + 1)) % 2).astype(np.float64)
    if tex is Texture.HALVES:
        return (v > 0).astype(np.float64)
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


def sample_scene(rng: np.random.Generator, classes: Sequence[ObjectClass], size: int,
                 times: Sequence[float] = FRAME_TIMES, min_visible: float = 0.4
                 ) -> tuple[np.ndarray, list[ObjectInstance]]:
    """Background (size, size, 3) uint8 BGR and one object of each of ``classes`` (bottom to top)
    whose visible part is at least ``min_visible`` of their in-frame silhouette at every time."""
    background = random_background(size, rng)
    for _attempt in range(200):
        centres: list[np.ndarray] = []
        while len(centres) < len(classes):
            c = rng.uniform(0.22, 0.78, 2)
            if all(np.hypot(*(c - o)) > 0.22 for o in centres) or rng.random() < 0.05:
                centres.append(c)
        objects = [sample_instance(cls, sample_motion(
            rng, (float(c[0]), float(c[1])), float(rng.uniform(0.09, 0.2)), 0.12), rng)
            for cls, c in zip(classes, centres)]
        if _visible_enough(objects, times, min_visible):
            return background, objects
    raise RuntimeError(f"no scene with {len(classes)} visible objects in 200 tries")  # ~never


def _visible_enough(objects: Sequence[ObjectInstance], times: Sequence[float], min_visible: float,
                    check_size: int = 64) -> bool:
    for t in times:
        for obj, vis in zip(objects, visible_masks(objects, t, check_size)):
            x, y, _, _ = obj.motion.at(t)
            full = np.count_nonzero(visible_masks([obj], t, check_size))
            if not (0.08 < x < 0.92 and 0.08 < y < 0.92) or \
                    np.count_nonzero(vis) < max(min_visible * full, 4):
                return False
    return True
