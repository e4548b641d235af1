"""Procedural silhouettes for the "wide" synthetic style: :class:`Outline` and its parts.

The named shapes (:mod:`pcmanet.data.synthetic_shapes`) are few and hand-drawn; a model trained
on 8 of them, each in its class's own hue, learns colour rather than shape. The wide style gives
each of its many classes a silhouette drawn from a seeded procedural family, so that a backbone
trained on it needs outline features that carry over to shapes it has not seen:

* ``blob``: a closed curve ``r(a) = 1 + sum_k c_k cos(k a + p_k)`` over harmonics k = 2..5;
* ``spiky``: a star polygon with 5-11 points and irregular inner and outer radii;
* ``polygon``: 4-8 vertices at jittered angles and radii (corners, not curves);
* ``blocks``: 3-5 cells of a 3x3 grid joined edge to edge (polyomino-like, several parts).

Some outlines get a hole. Each is centred on its area centroid and scaled to radius ~1.05, as
the named shapes are. :func:`outline_parts` returns the same (unit polygon (n, 2), filled) parts
:data:`~pcmanet.data.synthetic_shapes.SHAPE_PARTS` holds; they are computed on first use and
cached, so importing the style costs nothing. Everything derives from the outline's index:
equal indices give identical polygons. The test suite checks that no outline is close to a
named shape (the evaluation families' shapes included) or to another outline.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

KINDS = ("blob", "spiky", "polygon", "blocks")
_KEY = 0x0B_71AE  # separates the outlines' random streams from everything else


@dataclass(frozen=True)
class Outline:
    """A procedural silhouette: ``index`` picks the random stream, ``kind`` one of :data:`KINDS`
    (by default ``KINDS[index % 4]``)."""

    index: int

    @property
    def kind(self) -> str:
        return KINDS[self.index % len(KINDS)]

    @property
    def value(self) -> str:  # the named shapes' enum value, for names and logs
        return f"{self.kind}{self.index:02d}"


def _radial(radii: np.ndarray) -> np.ndarray:
    """(n,) radii at equal angles from the top -> (n, 2) polygon."""
    a = -math.pi / 2 + 2 * math.pi * np.arange(len(radii)) / len(radii)
    return np.stack([np.cos(a), np.sin(a)], 1) * radii[:, None]


def _area_centroid(poly: np.ndarray) -> tuple[float, np.ndarray]:
    nxt = np.roll(poly, -1, axis=0)
    cross = poly[:, 0] * nxt[:, 1] - nxt[:, 0] * poly[:, 1]  # (n,) shoelace terms
    area = cross.sum() / 2
    return float(area), ((poly + nxt) * cross[:, None]).sum(0) / (6 * area)


def _blob(rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
    a = 2 * math.pi * np.arange(96) / 96
    r = np.ones(96)
    for k in range(2, 6):
        r += rng.uniform(0.1, 0.35) / (k - 1) ** 0.5 * np.cos(k * a + rng.uniform(0, 2 * math.pi))
    return [(_radial(np.maximum(r, 0.25)), True)]


def _spiky(rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
    n = int(rng.integers(5, 12))
    outer = rng.uniform(0.8, 1.1, n)
    inner = rng.uniform(0.3, 0.7, n)
    return [(_radial(np.stack([outer, inner], 1).reshape(-1)), True)]


def _polygon(rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
    n = int(rng.integers(4, 9))
    angles = np.sort(2 * math.pi * (np.arange(n) + rng.uniform(-0.35, 0.35, n)) / n)
    radii = rng.uniform(0.45, 1.1, n)
    return [(np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None], True)]


def _blocks(rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
    cells = {(1, 1)}
    target = int(rng.integers(3, 6))
    while len(cells) < target:
        x, y = sorted(cells)[int(rng.integers(len(cells)))]
        dx, dy = ((1, 0), (-1, 0), (0, 1), (0, -1))[int(rng.integers(4))]
        if 0 <= x + dx < 3 and 0 <= y + dy < 3:
            cells.add((x + dx, y + dy))
    w, h = rng.uniform(0.8, 1.25), rng.uniform(0.8, 1.25)  # cell aspect
    square = np.array([(0, 0), (1, 0), (1, 1), (0, 1)], float)
    # cells overlap by a hair so that the filled union has no seams
    return [(((square * 1.02 + (x - 0.01, y - 0.01)) - 1.5) * (w, h) * 0.7, True)
            for x, y in sorted(cells)]


def _normalise(parts: list[tuple[np.ndarray, bool]]) -> tuple[tuple[np.ndarray, bool], ...]:
    """Move the filled parts' joint centroid to the origin and scale the farthest vertex to 1.05."""
    stats = [_area_centroid(p) for p, filled in parts if filled]
    area = sum(abs(a) for a, _ in stats)
    centre = sum(abs(a) * c for a, c in stats) / area
    moved = [(p - centre, filled) for p, filled in parts]
    reach = max(float(np.hypot(*p.T).max()) for p, _ in moved)
    return tuple((p * (1.05 / reach), filled) for p, filled in moved)


@functools.cache
def outline_parts(outline: Outline) -> tuple[tuple[np.ndarray, bool], ...]:
    """(unit polygon (n, 2) float64, filled) parts of ``outline``, drawn in order (a part with
    ``filled`` False cuts a hole); the arrays are shared, do not modify them."""
    rng = np.random.default_rng([_KEY, outline.index])
    make = {"blob": _blob, "spiky": _spiky, "polygon": _polygon, "blocks": _blocks}[outline.kind]
    parts = make(rng)
    if outline.kind in ("blob", "polygon") and rng.random() < 0.3:  # a hole off the centre
        hole = _radial(np.full(32, rng.uniform(0.22, 0.32))) + rng.uniform(-0.15, 0.15, 2)
        parts.append((hole, False))
    out = _normalise(parts)
    for p, _ in out:
        p.flags.writeable = False
    return out
