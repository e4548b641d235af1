"""Silhouettes of the synthetic sounding objects: :class:`Shape` and its unit polygons.

Each shape is a tuple of (unit-radius polygon (n, 2), filled) parts in :data:`SHAPE_PARTS`,
drawn in order (a part with ``filled`` False cuts a hole), rotated, scaled and placed by
:func:`pcmanet.data.synthetic_scene.object_mask`.
"""

from __future__ import annotations

import enum
import math

import numpy as np


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
    # style "signs"
    HOUSE = "house"  # square body, gable roof
    GEAR = "gear"  # 6 blunt teeth
    TRAPEZOID = "trapezoid"
    KITE = "kite"
    BOLT = "bolt"  # lightning bolt
    SEMICIRCLE = "semicircle"
    FRAME = "frame"  # square with a square hole
    TEE = "tee"  # T shape


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
_HOUSE = _centred(np.array([(-0.8, 1.0), (0.8, 1.0), (0.8, -0.15), (0.0, -1.1),
                            (-0.8, -0.15)]))
_TRAPEZOID = _centred(np.array([(-1.05, 0.6), (1.05, 0.6), (0.5, -0.6), (-0.5, -0.6)]))
_KITE = _centred(np.array([(0.0, -1.0), (0.9, -0.45), (0.0, 1.15), (-0.9, -0.45)]))
_BOLT = _centred(np.array([(-0.15, -1.1), (0.6, -1.1), (0.15, -0.2), (0.65, -0.2), (-0.4, 1.1),
                           (-0.1, 0.1), (-0.6, 0.1)]))
_SEMICIRCLE = _centred(_regular(33, 1.15, 0.0)[:17][::-1] * np.array([1.0, -1.0]))  # flat side down
_TEE = _centred(np.array([(-1.0, -0.95), (1.0, -0.95), (1.0, -0.4), (0.3, -0.4), (0.3, 1.05),
                          (-0.3, 1.05), (-0.3, -0.4), (-1.0, -0.4)]))
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
    Shape.HOUSE: ((_HOUSE, True),),
    Shape.GEAR: ((_star(6, 1.1, 0.66), True),),
    Shape.TRAPEZOID: ((_TRAPEZOID, True),),
    Shape.KITE: ((_KITE, True),),
    Shape.BOLT: ((_BOLT, True),),
    Shape.SEMICIRCLE: ((_SEMICIRCLE, True),),
    Shape.FRAME: ((_regular(4, 1.1, math.pi / 4), True), (_regular(4, 0.62, math.pi / 4), False)),
    Shape.TEE: ((_TEE, True),),
}
