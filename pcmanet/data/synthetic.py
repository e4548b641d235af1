"""Synthetic sounding-objects data sets in the exact AVSBench S4 / MS3 on-disk layout.

``python -m pcmanet.data.synthetic --out DIR --task s4|ms3|both [--train N --val N --test N]
[--size 224] [--seed 0] [--pkl] [--style shapes|alt|signs] [--silent-fraction F]
[--offscreen-fraction F]`` writes ``DIR/Single-source`` (S4) and/or
``DIR/Multi-sources`` (MS3) as docs/AVSBENCH.md sections 0-2 and 4 describe, so the AVSBench
loaders, training and evaluation run on it unchanged.

``--style`` picks the 8 object classes: "shapes" (default, the demo's classes), "alt" or
"signs", two sets disjoint from it and from each other (other names, shapes, textures and
sounds), for measuring how a model trained on the default style fine-tunes on objects it has
never seen. Another style also gets its own clip names, scenes and sounds for the same seed;
``synthetic_meta.json`` records ``"style"`` for it (absent for "shapes", so default-style files
stay as they were before styles existed).

``--silent-fraction`` and ``--offscreen-fraction`` turn that fraction of each split's clips into
clips where no visible object sounds, with all-zero masks in every labelled frame (valid AVSBench
masks): *silent* clips hold background noise only (every fourth of them digital silence, all
zeros), *off-screen* clips the sound of an object of a class that is not in the scene, over
background noise. In S4 their category is ``silence`` or ``off-screen``. They keep their names
and frames; the choice comes from a random stream of its own, so every other clip is
byte-identical to the same clip of the set written without the options, and with both at 0
(the default) the files are exactly those of a set written before the options existed
(``synthetic_meta.json`` records the fractions only when non-zero, as for ``style``).

The data forces a model to use the audio: clips come in groups that share *identical* frames
(one scene render) but differ in which object sounds, hence in the audio and the masks. S4: each
scene of 2-3 objects is written ``group`` times (default 2), each time with another sounding
object. MS3: scenes of 2-4 objects, 0-2 sounding objects per clip, union masks.

Everything derives from ``--seed`` and ``--style``: the same seed and style give byte-identical
files (PNGs carry no time stamps; the pickled log-mel tensors get a fixed storage key, see
:func:`dump_tensor`). Object classes live in :mod:`pcmanet.data.synthetic_classes`, their
sounds in :mod:`pcmanet.data.synthetic_sound`, scenes and the renderer in
:mod:`pcmanet.data.synthetic_scene`; the continuous live-demo scene is :class:`DemoScene`
(:mod:`pcmanet.data.synthetic_demo`), always in the default style.
"""

from __future__ import annotations

import argparse
import csv
import enum
import io
import json
import math
import os
import pickle
import pickletools
import shutil
import string
import struct
import sys
import time
import wave
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pcmanet.audio.frontend import log_mel

from .synthetic_classes import (
    CLASS_NAMES,
    DEFAULT_STYLE,
    STYLES,
    ObjectClass,
    style_classes,
)
from .synthetic_demo import DemoScene, write_demo_video
from .synthetic_scene import (
    CLIP_SECONDS,
    FRAME_TIMES,
    ObjectInstance,
    mix_clip,
    random_background,
    sample_instance,
    sample_motion,
    visible_masks,
)
from .synthetic_scene import render as render_frame
from .synthetic_sound import SAMPLE_RATE

__all__ = ["CLASS_NAMES", "OFFSCREEN_CATEGORY", "SILENT_CATEGORY", "STYLES", "ClipAudio",
           "DemoScene", "main", "plan_dataset", "sample_scene", "write_dataset",
           "write_demo_video"]

TASKS = ("s4", "ms3")
SPLITS = ("train", "val", "test")
TASK_FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources"}
_ID_CHARS = string.ascii_letters + string.digits + "-_"
_MS3_SOUNDING_P = (0.15, 0.45, 0.40)  # P(0, 1, 2 sounding objects)
_SILENCE_KEY = 0x51_1E  # separates the silent / off-screen choice's random stream
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
    """Clips sharing one scene render: scene seed key, object classes (bottom to top), clips
    and the style whose classes ``classes`` indexes."""

    key: tuple[int, ...]  # numpy SeedSequence entropy of the scene
    classes: tuple[int, ...]  # indices into STYLES[style]
    clips: tuple[ClipPlan, ...]
    style: str = DEFAULT_STYLE


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
                 style: str = DEFAULT_STYLE, silent: float = 0.0, offscreen: float = 0.0
                 ) -> list[GroupPlan]:
    """Every group of a task, split by split (train, val, test), deterministic in ``seed`` and
    ``style`` (a key of :data:`STYLES`; ValueError naming the valid ones otherwise).
    ``silent`` and ``offscreen``: fractions of each split's clips made silent or off-screen
    (:func:`add_silence`)."""
    style_classes(style)  # validates
    if not (0 <= silent <= 1 and 0 <= offscreen <= 1 and silent + offscreen <= 1):
        raise ValueError(f"need 0 <= silent, offscreen and silent + offscreen <= 1, got "
                         f"silent={silent}, offscreen={offscreen}")
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
    return plans


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


# ---------------------------------------------------------------------------------------------
# Scenes and files


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


def dump_tensor(tensor: torch.Tensor, f: BinaryIO) -> None:
    """``pickle.dump(tensor, f)`` with byte-identical output for equal tensors.

    torch pickles a storage as its legacy ``torch.save`` bytes keyed by the storage's memory
    address; this replaces that key by "0". The file unpickles with plain ``pickle.load`` (only
    torch needed) into a leaf tensor with the same values, dtype, shape and requires_grad.
    """

    def canonical(data: bytes, key: str) -> bytes:
        stream = io.BytesIO(data)  # legacy save: magic, protocol, sys info, object, keys, raw
        ends = []
        for _ in range(5):
            for _op in pickletools.genops(stream):
                pass
            ends.append(stream.tell())
        old = b"X" + struct.pack("<I", len(key)) + key.encode()
        meta = data[ends[2]:ends[4]]
        if meta.count(old) != 2:
            raise RuntimeError("unexpected torch storage pickle layout")
        new = b"X" + struct.pack("<I", 1) + b"0"
        return data[:ends[2]] + meta.replace(old, new) + data[ends[4]:]

    class _Pickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, torch.storage.TypedStorage):
                fn, (data,) = obj.__reduce__()
                return fn, (canonical(data, str(obj._untyped_storage._cdata)),)
            return NotImplemented

    _Pickler(f, protocol=pickle.DEFAULT_PROTOCOL).dump(tensor)


def write_wav(path: Path, wave_f64: np.ndarray, channels: int = 1) -> np.ndarray:
    """Write (S,) float in [-1, 1] as 16 kHz 16-bit PCM (channels copies); returns the int16."""
    pcm = np.round(np.clip(wave_f64, -1, 1) * 32767).astype("<i2")  # (S,)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.repeat(pcm, channels).tobytes())
    return pcm


def _paths(task: str, root: Path, clip: ClipPlan, category: str) -> dict[str, Any]:
    """Output paths of a clip: frame(k), mask(k), wav, pkl."""
    d, n, s = root / f"{task}_data", clip.name, clip.split
    if task == "s4":
        return {"frame": lambda k: d / "visual_frames" / s / category / n / f"{n}_{k}.png",
                "mask": lambda k: d / "gt_masks" / s / category / n / f"{n}_{k}.png",
                "wav": d / "audio_wav" / s / category / f"{n}.wav",
                "pkl": d / "audio_log_mel" / s / category / f"{n}.pkl"}
    return {"frame": lambda k: d / "visual_frames" / n / f"{n}.mp4_{k}.png",
            "mask": lambda k: d / "gt_masks" / s / n / f"{n}_{k}.png",
            "wav": d / "audio_wav" / s / f"{n}.wav", "pkl": d / "audio_log_mel" / s / f"{n}.pkl"}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_group(task: str, root: Path, plan: GroupPlan, size: int, pkl: bool = False,
                channels: int = 1) -> None:
    """Render a group's scene once and write all its clips' frames, masks, wav (and pkl)."""
    rng = np.random.default_rng(np.random.SeedSequence(plan.key))
    catalogue = style_classes(plan.style)
    background, objects = sample_scene(rng, [catalogue[k] for k in plan.classes], size)
    frames, masks = zip(*(render_frame(background, objects, t) for t in FRAME_TIMES))
    pngs = [cv2.imencode(".png", img)[1].tobytes() for img in frames]  # one encode per group
    for j, clip in enumerate(plan.clips):
        category = clip_category(plan, clip) if task == "s4" else ""
        paths = _paths(task, root, clip, category)
        for k, png in enumerate(pngs, 1):
            _write(paths["frame"](k), png)
        mask_frames = 1 if task == "s4" and clip.split == "train" else len(FRAME_TIMES)
        for k in range(1, mask_frames + 1):
            union = np.zeros((size, size), bool)
            for i in clip.sounding:
                union |= masks[k - 1][i]
            mask_png = cv2.imencode(".png", union.astype(np.uint8) * 255)[1]  # 8-bit grey 0/255
            _write(paths["mask"](k), mask_png.tobytes())
        audio_rng = np.random.default_rng(np.random.SeedSequence((*plan.key, j + 1)))
        sources = [objects[i] for i in clip.sounding]
        if clip.audio is ClipAudio.OFFSCREEN:  # an instance of a class absent from the scene
            assert clip.offscreen is not None, clip
            sources = [sample_instance(catalogue[clip.offscreen], sample_motion(
                audio_rng, (0.5, 0.5), 0.1, 0.0), audio_rng)]
        sound = mix_clip(sources, CLIP_SECONDS * SAMPLE_RATE, audio_rng)
        if clip.audio is ClipAudio.ZEROS:
            sound = np.zeros_like(sound)
        paths["wav"].parent.mkdir(parents=True, exist_ok=True)
        pcm = write_wav(paths["wav"], sound, channels)
        if pkl:
            mel = log_mel(pcm / 32768.0, SAMPLE_RATE)  # (N, 1, 96, 64), as the wav reads back
            if mel.shape[0] < CLIP_SECONDS:  # the preprocess fix-up: repeat the last example
                mel = torch.cat([mel, mel[-1:].expand(CLIP_SECONDS - mel.shape[0], -1, -1, -1)])
            buf = io.BytesIO()
            dump_tensor(mel[:CLIP_SECONDS].contiguous().requires_grad_(True), buf)
            _write(paths["pkl"], buf.getvalue())


def _write_group_job(args: tuple[str, Path, GroupPlan, int, bool, int]) -> None:
    torch.set_num_threads(1)
    write_group(*args)


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`write_dataset` wrote for one task."""

    task: str
    root: Path  # DIR/Single-source or DIR/Multi-sources
    clips: dict[str, int]
    groups: int
    seconds: float


def write_dataset(out: str | os.PathLike[str], task: str, sizes: dict[str, int], *, size: int = 224,
                  seed: int = 0, pkl: bool = False, group: int = 2, channels: int = 1,
                  workers: int = 1, overwrite: bool = False, progress: bool = False,
                  style: str = DEFAULT_STYLE, silent: float = 0.0, offscreen: float = 0.0
                  ) -> DatasetSummary:
    """Write one task's synthetic data set under ``out`` in the AVSBench layout.

    Args:
        out: the AVSBench data root (holds ``Single-source/`` and ``Multi-sources/``).
        task: "s4" or "ms3".
        sizes: clips per split, e.g. ``{"train": 400, "val": 100, "test": 100}``.
        size: frame and mask side in pixels (AVSBench: 224).
        seed: everything derives from it; equal seeds give byte-identical files.
        pkl: also write ``audio_log_mel/*.pkl`` (VGGish examples (5, 1, 96, 64)).
        group: clips per scene render (same frames, different sounding objects).
        channels: wav channels (1 or 2; stereo repeats the mono signal).
        workers: processes; the output does not depend on it.
        overwrite: delete an existing task folder first instead of refusing.
        progress: show a tqdm bar.
        style: the object classes, a key of :data:`STYLES` ("shapes" or "alt").
        silent: fraction of each split's clips with background noise or digital silence only
            and all-zero masks (see :func:`add_silence`).
        offscreen: fraction of each split's clips sounding like an object that is not in the
            scene, with all-zero masks.

    Raises:
        ValueError: a bad option, an unknown style included (the message names the valid ones).
        FileExistsError: the task folder exists, is not empty and ``overwrite`` is False.
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    if size < 16 or seed < 0:
        raise ValueError(f"need size >= 16 and seed >= 0, got size={size}, seed={seed}")
    if any(n < 0 for n in sizes.values()) or set(sizes) - set(SPLITS):
        raise ValueError(f"sizes must map {SPLITS} to counts >= 0, got {sizes}")
    plans = plan_dataset(task, sizes, seed, group, style, silent, offscreen)
    root = Path(out) / TASK_FOLDERS[task]
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root}: exists and is not empty; pass overwrite=True")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = [(task, root, p, size, pkl, channels) for p in plans]
    with tqdm(total=len(jobs), desc=f"{task} groups", disable=not progress) as bar:
        if workers <= 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # one 5 s log-mel: ~4 ms on 1 thread, ~100 ms on 2 (2 cores)
            try:
                for job in jobs:
                    write_group(*job)
                    bar.update()
            finally:
                torch.set_num_threads(threads)
        else:
            ctx = get_context("spawn")  # no fork after torch has started its thread pools
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for _ in pool.map(_write_group_job, jobs, chunksize=4):
                    bar.update()
    _write_tables(task, root, plans, seed, size, style, silent, offscreen)
    clips = {s: sum(c.split == s for p in plans for c in p.clips) for s in SPLITS}
    return DatasetSummary(task, root, clips, len(plans), time.perf_counter() - start)


def _write_tables(task: str, root: Path, plans: list[GroupPlan], seed: int, size: int,
                  style: str = DEFAULT_STYLE, silent: float = 0.0, offscreen: float = 0.0
                  ) -> None:
    """The meta CSV (AVSBench header) and ``synthetic_meta.json`` (groups, objects, sounding;
    ``"style"`` unless it is the default, the silent / off-screen fractions unless 0; a clip
    without visible sound also gets ``"audio"``: "noise", "zeros" or "offscreen", the latter
    with ``"offscreen"``, the unseen object's class), with the names of ``style``'s classes."""
    names = [c.name for c in style_classes(style)]
    with open(root / f"{task}_meta_data.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "start_time", "category", "split"] if task == "s4"
                   else ["video_id", "split"])
        for p in plans:
            for c in p.clips:
                w.writerow([c.name, c.start_time, clip_category(p, c), c.split]
                           if task == "s4" else [c.name, c.split])

    def clip_meta(p: GroupPlan, c: ClipPlan) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": c.name,
                                 "sounding": [names[p.classes[i]] for i in c.sounding]}
        if c.audio is not ClipAudio.SOURCES:  # absent for the clips of a set without silence
            entry["audio"] = c.audio.value
        if c.offscreen is not None:
            entry["offscreen"] = names[c.offscreen]
        return entry

    groups = [{"split": p.clips[0].split, "objects": [names[i] for i in p.classes],
               "clips": [clip_meta(p, c) for c in p.clips]}
              for p in plans]
    meta: dict[str, Any] = {"generator": "pcmanet.data.synthetic", "task": task, "seed": seed}
    if style != DEFAULT_STYLE:  # absent: the default, as in sets written before styles existed
        meta["style"] = style
    if silent:
        meta["silent_fraction"] = silent
    if offscreen:
        meta["offscreen_fraction"] = offscreen
    meta.update(size=size, frame_times_s=list(FRAME_TIMES), classes=names, groups=groups)
    (root / "synthetic_meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _directory_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options, see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m pcmanet.data.synthetic",
                                description="Write a synthetic data set in the AVSBench layout.")
    p.add_argument("--out", required=True, help="AVSBench data root to write")
    p.add_argument("--task", choices=[*TASKS, "both"], required=True)
    p.add_argument("--train", type=int, default=400, help="train clips (default 400)")
    p.add_argument("--val", type=int, default=100, help="val clips (default 100)")
    p.add_argument("--test", type=int, default=100, help="test clips (default 100)")
    p.add_argument("--size", type=int, default=224, help="frame side in pixels (default 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pkl", action="store_true", help="also write audio_log_mel/*.pkl")
    p.add_argument("--group", type=int, default=2,
                   help="clips per shared scene render, each with other sounding objects")
    p.add_argument("--channels", type=int, choices=(1, 2), default=1, help="wav channels")
    p.add_argument("--workers", type=int, default=1, help="processes (output is identical)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing task folder")
    p.add_argument("--style", choices=list(STYLES), default=DEFAULT_STYLE,
                   help="object classes: shapes (default, the demo's), alt or signs (8 others "
                        "each: other shapes, textures and sounds)")
    p.add_argument("--silent-fraction", type=float, default=0.0, metavar="F",
                   help="fraction of each split's clips with background noise (1 in 4: digital "
                        "silence) only and empty masks (default 0)")
    p.add_argument("--offscreen-fraction", type=float, default=0.0, metavar="F",
                   help="fraction of each split's clips sounding like an object not in the "
                        "scene, with empty masks (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints one summary line per task."""
    args = parse_args(argv)
    sizes = {"train": args.train, "val": args.val, "test": args.test}
    for task in TASKS if args.task == "both" else (args.task,):
        try:
            s = write_dataset(args.out, task, sizes, size=args.size, seed=args.seed, pkl=args.pkl,
                              group=args.group, channels=args.channels, workers=args.workers,
                              overwrite=args.overwrite, progress=not args.quiet,
                              style=args.style, silent=args.silent_fraction,
                              offscreen=args.offscreen_fraction)
        except (ValueError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        mib = _directory_bytes(s.root) / 2**20
        print(f"{task}: {sum(s.clips.values())} clips {s.clips} in {s.groups} groups, "
              f"{s.seconds:.1f} s, {mib:.1f} MiB -> {s.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
