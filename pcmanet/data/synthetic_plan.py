"""The plan of a synthetic data set: every clip's name, split, scene classes and sounding
objects, fixed from the seed and style before anything is rendered.

S4 groups hold 2-3 objects, each clip of a group with another one sounding (classes cycle so
each split stays balanced); MS3 groups hold 2-4 objects with 0-2 sounding per clip.
:func:`add_silence` turns a share of the clips into silent or off-screen ones;
:func:`add_random_hues` marks a share of the groups whose objects get random hues.
"""

from __future__ import annotations

import enum
import math
import string
import zlib
from dataclasses import dataclass, replace

import numpy as np

from .synthetic_classes import DEFAULT_STYLE, style_classes

TASKS = ("s4", "ms3")
SPLITS = ("train", "val", "test")
TASK_FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources"}
_ID_CHARS = string.ascii_letters + string.digits + "-_"
_MS3_SOUNDING_P = (0.15, 0.45, 0.40)  # P(0, 1, 2 sounding objects)
_SILENCE_KEY = 0x51_1E  # separates the silent / off-screen choice's random stream
HUE_KEY = 0x4875_E  # separates the random-hue choice's (and the hues') random streams
SILENT_CATEGORY = "silence"  # S4 category of a silent clip
OFFSCREEN_CATEGORY = "off-screen"  # S4 category of a clip whose sounding object is not in view


# ---------------------------------------------------------------------------------------------
# Plan: names, classes and sounding objects of every clip, fixed before any rendering


class ClipAudio(enum.Enum):
    """What a clip's soundtrack holds."""

    SOURCES = "sources"  # its sounding objects over background noise (none: noise only, MS3)
    NOISE = "noise"  # a silent clip: background noise only
    ZEROS = "zeros"  # a silent clip: digital silence
    OFFSCREEN = "offscreen"  # an object that is not in the scene, over background noise


@dataclass(frozen=True)
class ClipPlan:
    """One clip: its name, split, CSV start time, the indices of its sounding objects and what
    its soundtrack holds (with ``offscreen``, the style's class index of the unseen object)."""

    name: str
    split: str
    start_time: int
    sounding: tuple[int, ...]  # indices into GroupPlan.classes; masks are their union
    audio: ClipAudio = ClipAudio.SOURCES
    offscreen: int | None = None  # index into STYLES[style] when audio is OFFSCREEN


@dataclass(frozen=True)
class GroupPlan:
    """Clips sharing one scene render: scene seed key, object classes (bottom to top), clips,
    the style whose classes ``classes`` indexes, and whether each object's hue is drawn at
    random instead of its class's (``random_hue``; see :func:`add_random_hues`)."""

    key: tuple[int, ...]  # numpy SeedSequence entropy of the scene
    classes: tuple[int, ...]  # indices into STYLES[style]
    clips: tuple[ClipPlan, ...]
    style: str = DEFAULT_STYLE
    random_hue: bool = False


def _style_tag(style: str) -> tuple[int, ...]:
    """Seed entropy appended for a style: none for the default (its files stay as they were), a
    fixed 32-bit hash of the name otherwise, so other styles get their own ids, scenes, sounds."""
    return () if style == DEFAULT_STYLE else (zlib.crc32(style.encode()),)


def youtube_ids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` unique 11-char ids from [A-Za-z0-9_-]; the first three start with '-', start
    with '_' and contain '_', as real AVSBench names do (so no code may split on the first '_')."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        name = "".join(_ID_CHARS[i] for i in rng.integers(len(_ID_CHARS), size=11))
        name = {0: "-" + name[1:], 1: "_" + name[1:], 2: name[:5] + "_" + name[6:]}.get(
            len(ids), name)
        if name not in seen:
            seen.add(name)
            ids.append(name)
    return ids


def _plan_split(task: str, split: str, count: int, group: int, seed: int,
                ids: list[str], rng: np.random.Generator, style: str = DEFAULT_STYLE
                ) -> list[GroupPlan]:
    """Groups of one split; consumes ids (S4: one per clip, MS3: one per group)."""
    groups: list[GroupPlan] = []
    cycle: list[int] = []  # S4: sounding classes cycle through shuffled class lists (balanced)
    n_cls = len(style_classes(style))
    for g in range(math.ceil(count / group)):
        m = min(group, count - g * group)
        key = (seed, TASKS.index(task), SPLITS.index(split), g, *_style_tag(style))
        sets: list[tuple[int, ...]] = []  # sounding object indices of each clip
        if task == "s4":
            sounding_cls: list[int] = []
            while len(sounding_cls) < m:
                fresh = [i for i, c in enumerate(cycle) if c not in sounding_cls]
                if not fresh:  # refill in front; leftovers are used first
                    cycle = [int(c) for c in rng.permutation(n_cls)] + cycle
                    continue
                sounding_cls.append(cycle.pop(fresh[-1]))
            k = int(rng.integers(max(2, m), 4))  # 2-3 objects
            rest = [c for c in range(n_cls) if c not in sounding_cls]
            classes = sounding_cls + [int(c) for c in rng.choice(rest, k - m, replace=False)]
            order = [int(i) for i in rng.permutation(k)]  # depth order, bottom to top
            sets = [(order.index(i),) for i in range(m)]
            names = [ids.pop(0) for _ in range(m)]
        else:
            k = int(rng.integers(2, 5))  # 2-4 objects
            classes = [int(c) for c in rng.choice(n_cls, k, replace=False)]
            order = list(range(k))
            while len(sets) < m:
                size = min(int(rng.choice(3, p=_MS3_SOUNDING_P)), k)
                chosen = tuple(sorted(int(i) for i in rng.choice(k, size, replace=False)))
                if chosen not in sets or len(sets) >= 1 + k + k * (k - 1) // 2:
                    sets.append(chosen)
            base = ids.pop(0)
            names = [f"{base}_{int(i)}" for i in rng.choice(40, m, replace=False)]
        clips = tuple(ClipPlan(n, split, int(rng.integers(0, 6)), s) for n, s in zip(names, sets))
        groups.append(GroupPlan(key, tuple(classes[i] for i in order), clips, style))
    return groups


def plan_dataset(task: str, sizes: dict[str, int], seed: int = 0, group: int = 2,
                 style: str = DEFAULT_STYLE, silent: float = 0.0, offscreen: float = 0.0,
                 random_hue: float = 0.0) -> list[GroupPlan]:
    """Every group of a task, split by split (train, val, test), deterministic in ``seed`` and
    ``style`` (a key of :data:`STYLES`; ValueError naming the valid ones otherwise).
    ``silent`` and ``offscreen``: fractions of each split's clips made silent or off-screen
    (:func:`add_silence`); ``random_hue``: fraction of each split's groups whose objects get
    random hues (:func:`add_random_hues`)."""
    style_classes(style)  # validates
    if not (0 <= silent <= 1 and 0 <= offscreen <= 1 and silent + offscreen <= 1):
        raise ValueError(f"need 0 <= silent, offscreen and silent + offscreen <= 1, got "
                         f"silent={silent}, offscreen={offscreen}")
    if not 0 <= random_hue <= 1:
        raise ValueError(f"need 0 <= random_hue <= 1, got {random_hue}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    max_group = 3 if task == "s4" else 4
    if not 1 <= group <= max_group:
        raise ValueError(f"group must be in 1..{max_group} for {task}, got {group}")
    rng = np.random.default_rng([seed, TASKS.index(task), *_style_tag(style)])
    n_ids = sum(sizes.values()) if task == "s4" else sum(math.ceil(n / group)
                                                         for n in sizes.values())
    ids = youtube_ids(rng, n_ids)
    plans = [g for split in SPLITS
             for g in _plan_split(task, split, sizes.get(split, 0), group, seed, ids, rng, style)]
    if silent or offscreen:
        plans = add_silence(plans, task, seed, silent, offscreen)
    if random_hue:
        plans = add_random_hues(plans, task, seed, random_hue)
    return plans


def add_random_hues(plans: list[GroupPlan], task: str, seed: int, fraction: float
                    ) -> list[GroupPlan]:
    """Mark ``round(fraction * n)`` groups of each split of n groups ``random_hue``: their
    objects are painted in hues drawn at random (by the writer), so colour tells nothing of
    the class there. The groups come from a random stream of their own (``seed``, task, style,
    :data:`HUE_KEY`), so every other part of the plan is unchanged. A whole group is marked,
    since its clips share one render."""
    style = plans[0].style if plans else DEFAULT_STYLE
    rng = np.random.default_rng([seed, TASKS.index(task), *_style_tag(style), HUE_KEY])
    marked: set[int] = set()
    for split in SPLITS:
        refs = [g for g, p in enumerate(plans) if p.clips[0].split == split]
        chosen = rng.permutation(len(refs))[:round(fraction * len(refs))]
        marked.update(refs[int(i)] for i in chosen)
    return [replace(p, random_hue=True) if g in marked else p for g, p in enumerate(plans)]


def add_silence(plans: list[GroupPlan], task: str, seed: int, silent: float, offscreen: float
                ) -> list[GroupPlan]:
    """Make ``round(silent * n)`` clips of each split of n clips silent and
    ``round(offscreen * n)`` off-screen: no sounding object in view, so all-zero masks.

    Silent clips alternate, by draw order, one of digital silence to three of background
    noise; an off-screen clip sounds like an object of a class absent from its scene. The
    clips are drawn from a random stream of their own (``seed``, task, style,
    :data:`_SILENCE_KEY`), so the plan of every other clip is unchanged.
    """
    style = plans[0].style if plans else DEFAULT_STYLE
    rng = np.random.default_rng([seed, TASKS.index(task), *_style_tag(style), _SILENCE_KEY])
    n_cls = len(style_classes(style))
    clips = [list(p.clips) for p in plans]
    for split in SPLITS:
        refs = [(g, j) for g, p in enumerate(plans) for j, c in enumerate(p.clips)
                if c.split == split]
        n_silent, n_off = round(silent * len(refs)), round(offscreen * len(refs))
        for rank, i in enumerate(rng.permutation(len(refs))[:n_silent + n_off]):
            g, j = refs[int(i)]
            if rank < n_silent:
                audio = ClipAudio.ZEROS if rank % 4 == 0 else ClipAudio.NOISE
                clips[g][j] = replace(clips[g][j], sounding=(), audio=audio)
            else:
                absent = [k for k in range(n_cls) if k not in plans[g].classes]
                clips[g][j] = replace(clips[g][j], sounding=(), audio=ClipAudio.OFFSCREEN,
                                      offscreen=int(rng.choice(absent)))
    return [replace(p, clips=tuple(c)) for p, c in zip(plans, clips, strict=True)]


def clip_category(plan: GroupPlan, clip: ClipPlan) -> str:
    """A clip's S4 category: its sounding object's class name, or :data:`SILENT_CATEGORY` /
    :data:`OFFSCREEN_CATEGORY` when no visible object sounds."""
    if clip.audio is ClipAudio.OFFSCREEN:
        return OFFSCREEN_CATEGORY
    if not clip.sounding:
        return SILENT_CATEGORY
    return style_classes(plan.style)[plan.classes[clip.sounding[0]]].name
