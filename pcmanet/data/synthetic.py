"""Synthetic sounding-objects data sets in the exact AVSBench S4 / MS3 on-disk layout.

``python -m pcmanet.data.synthetic --out DIR --task s4|ms3|both [--train N --val N --test N]
[--size 224] [--seed 0] [--pkl] [--style shapes|alt|signs|wide] [--silent-fraction F]
[--offscreen-fraction F] [--random-hue F]`` writes ``DIR/Single-source`` (S4) and/or
``DIR/Multi-sources`` (MS3) as docs/avsbench.md sections 0-2 and 4 describe, so the AVSBench
loaders, training and evaluation run on it unchanged.

``--style`` picks the 8 object classes: "shapes" (default, the demo's classes), "alt" or
"signs", two sets disjoint from it and from each other (other names, shapes, textures and
sounds), for measuring how a model trained on the default style fine-tunes on objects it has
never seen. "wide" has 32 classes with procedural silhouettes and sounds in groups of four that
differ along one axis (pitch, pulse rate, noise band, brightness, modulation rate), for
pre-training on shape and fine sound differences (:mod:`pcmanet.data.synthetic_outlines`).
Another style also gets its own clip names, scenes and sounds for the same seed;
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

``--random-hue F`` paints the objects of ``round(F * n)`` of each split's n scene groups in hues
drawn at random per object instead of their class's hue (every class of every style has its own
hue, so a model trained without it can tell the sounding object by its colour alone). The groups
and the hues come from random streams of their own, so a scene keeps its layout, motion,
textures and sounds, and with F = 0 (the default) the files are those written without the option.

The data forces a model to use the audio: clips come in groups that share *identical* frames
(one scene render) but differ in which object sounds, hence in the audio and the masks. S4: each
scene of 2-3 objects is written ``group`` times (default 2), each time with another sounding
object. MS3: scenes of 2-4 objects, 0-2 sounding objects per clip, union masks.

Everything derives from ``--seed`` and ``--style``: the same seed and style give byte-identical
files (PNGs carry no time stamps; the pickled log-mel tensors get a fixed storage key, see
:func:`dump_tensor`). The plan of every clip is made first (:mod:`pcmanet.data.synthetic_plan`);
object classes live in :mod:`pcmanet.data.synthetic_classes`, their sounds in
:mod:`pcmanet.data.synthetic_sound`, scenes and the renderer in
:mod:`pcmanet.data.synthetic_scene`; this module writes the files. The continuous live-demo
scene is :class:`DemoScene` (:mod:`pcmanet.data.synthetic_demo`), always in the default style.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pickle
import pickletools
import struct
import sys
import time
import wave
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
from pcmanet.cli import Parser

from .output import fresh_folder
from .synthetic_classes import (
    CLASS_NAMES,
    DEFAULT_STYLE,
    STYLES,
    ObjectClass,
    style_classes,
)
from .synthetic_demo import DemoScene, write_demo_video
from .synthetic_plan import (
    HUE_KEY,
    OFFSCREEN_CATEGORY,
    SILENT_CATEGORY,
    SPLITS,
    TASK_FOLDERS,
    TASKS,
    ClipAudio,
    ClipPlan,
    GroupPlan,
    clip_category,
    plan_dataset,
    youtube_ids,
)
from .synthetic_scene import (
    CLIP_SECONDS,
    FRAME_TIMES,
    mix_clip,
    sample_instance,
    sample_motion,
    sample_scene,
)
from .synthetic_scene import render as render_frame
from .synthetic_sound import SAMPLE_RATE

__all__ = ["CLASS_NAMES", "OFFSCREEN_CATEGORY", "SILENT_CATEGORY", "STYLES", "ClipAudio",
           "DemoScene", "main", "plan_dataset", "sample_scene", "write_dataset",
           "write_demo_video", "youtube_ids"]

# ---------------------------------------------------------------------------------------------
# Files


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


def scene_classes(plan: GroupPlan) -> list[ObjectClass]:
    """The classes of a group's objects, bottom to top; with ``plan.random_hue`` each object's
    hue is drawn uniformly from 0-360 degrees (a stream of its own, (``plan.key``,
    :data:`HUE_KEY`)), so the scene's layout, textures and sounds are those of the same group
    without random hues and only the colours differ."""
    catalogue = style_classes(plan.style)
    classes = [catalogue[k] for k in plan.classes]
    if not plan.random_hue:
        return classes
    hue_rng = np.random.default_rng(np.random.SeedSequence((*plan.key, HUE_KEY)))
    return [replace(c, hue=float(hue_rng.uniform(0, 360))) for c in classes]


def write_group(task: str, root: Path, plan: GroupPlan, size: int, pkl: bool = False,
                channels: int = 1) -> None:
    """Render a group's scene once and write all its clips' frames, masks, wav (and pkl)."""
    rng = np.random.default_rng(np.random.SeedSequence(plan.key))
    catalogue = style_classes(plan.style)
    background, objects = sample_scene(rng, scene_classes(plan), size)
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
                  style: str = DEFAULT_STYLE, silent: float = 0.0, offscreen: float = 0.0,
                  random_hue: float = 0.0) -> DatasetSummary:
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
        style: the object classes, a key of :data:`STYLES` ("shapes", "alt", "signs", "wide").
        silent: fraction of each split's clips with background noise or digital silence only
            and all-zero masks (see :func:`add_silence`).
        offscreen: fraction of each split's clips sounding like an object that is not in the
            scene, with all-zero masks.
        random_hue: fraction of each split's scene groups whose objects are painted in random
            hues instead of their class's (:func:`scene_classes`), so colour does not tell the
            class; everything else of those clips is as without the option.

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
    plans = plan_dataset(task, sizes, seed, group, style, silent, offscreen, random_hue)
    root = Path(out) / TASK_FOLDERS[task]
    fresh_folder(root, overwrite)
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
    _write_tables(task, root, plans, seed, size, style, silent, offscreen, random_hue)
    clips = {s: sum(c.split == s for p in plans for c in p.clips) for s in SPLITS}
    return DatasetSummary(task, root, clips, len(plans), time.perf_counter() - start)


def _write_tables(task: str, root: Path, plans: list[GroupPlan], seed: int, size: int,
                  style: str = DEFAULT_STYLE, silent: float = 0.0, offscreen: float = 0.0,
                  random_hue: float = 0.0) -> None:
    """The meta CSV (AVSBench header) and ``synthetic_meta.json`` (groups, objects, sounding;
    ``"style"`` unless it is the default, the silent / off-screen / random-hue fractions unless
    0, ``"random_hue": true`` on the groups painted in random hues; a clip
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

    def group_meta(p: GroupPlan) -> dict[str, Any]:
        entry: dict[str, Any] = {"split": p.clips[0].split,
                                 "objects": [names[i] for i in p.classes]}
        if p.random_hue:  # absent otherwise, as in sets written before the option
            entry["random_hue"] = True
        entry["clips"] = [clip_meta(p, c) for c in p.clips]
        return entry

    groups = [group_meta(p) for p in plans]
    meta: dict[str, Any] = {"generator": "pcmanet.data.synthetic", "task": task, "seed": seed}
    if style != DEFAULT_STYLE:  # absent: the default, as in sets written before styles existed
        meta["style"] = style
    if silent:
        meta["silent_fraction"] = silent
    if offscreen:
        meta["offscreen_fraction"] = offscreen
    if random_hue:
        meta["random_hue_fraction"] = random_hue
    meta.update(size=size, frame_times_s=list(FRAME_TIMES), classes=names, groups=groups)
    (root / "synthetic_meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _directory_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options, see the module docstring."""
    p = Parser(prog="python -m pcmanet.data.synthetic",
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
                        "each: other shapes, textures and sounds), wide (32 procedural shapes "
                        "with sounds that differ along one axis per group; use --random-hue 1)")
    p.add_argument("--silent-fraction", type=float, default=0.0, metavar="F",
                   help="fraction of each split's clips with background noise (1 in 4: digital "
                        "silence) only and empty masks (default 0)")
    p.add_argument("--offscreen-fraction", type=float, default=0.0, metavar="F",
                   help="fraction of each split's clips sounding like an object not in the "
                        "scene, with empty masks (default 0)")
    p.add_argument("--random-hue", type=float, default=0.0, metavar="F",
                   help="fraction of each split's scenes whose objects get random hues instead "
                        "of their class's, so colour does not tell the class (default 0)")
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
                              offscreen=args.offscreen_fraction,
                              random_hue=args.random_hue)
        except (ValueError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        mib = _directory_bytes(s.root) / 2**20
        print(f"{task}: {sum(s.clips.values())} clips {s.clips} in {s.groups} groups, "
              f"{s.seconds:.1f} s, {mib:.1f} MiB -> {s.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
