"""Evaluation-only S4 data sets: sound families the demo model never heard (issue 22).

``python -m pcmanet.data.eval_families --family pitch|rhythm|speech --out DIR [--train 150
--val 20 --test 40] [--size 224] [--seed 0] [--overwrite]`` writes ``DIR/Single-source`` in
the AVSBench S4 layout that :class:`pcmanet.data.avs_object.S4Dataset` reads (frames, masks,
wav, ``s4_meta_data.csv``), plus ``family_meta.json``.

Each family has 4 object kinds; the sounds (:mod:`pcmanet.data.eval_sounds`) differ along one
axis only: pitch, rhythm, or vowel timbre (formants). The objects' colours are drawn at random
per scene, so colour carries no information; ``pitch`` and ``speech`` objects are plain flat
shapes, ``rhythm`` objects are textured. Scenes hold 2-3 objects and are written as *twin*
clips: two clips with byte-identical frames, each with another object sounding, so only the
audio tells which object to segment. ``family_meta.json`` lists every clip's sounding kind and
its twin (``"twin"``; null for a last odd clip of a split) for the twin scorer.

The data is for evaluation and fine-tuning experiments only: nothing on the demo model's
training path imports this module (tested), and none of its sounds comes from the demo
generator's :class:`~pcmanet.data.synthetic_classes.SoundRecipe`. Everything derives from
``--seed`` and ``--family``: equal arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pcmanet.cli import Parser

from .eval_sounds import FAMILIES, family_sound
from .output import fresh_folder
from .synthetic import write_wav
from .synthetic_classes import ObjectClass, SoundRecipe, Texture
from .synthetic_plan import SPLITS
from .synthetic_scene import CLIP_SECONDS, FRAME_TIMES, render, sample_scene
from .synthetic_shapes import Shape
from .synthetic_sound import PEAK, SAMPLE_RATE, background_noise, sample_noise_kind

_SILENT = SoundRecipe()  # the scene renderer's classes need a recipe; these sounds are not used
FAMILY_CLASSES: dict[str, tuple[ObjectClass, ...]] = {
    "pitch": (  # plain flat shapes, a pitch each (eval_sounds.PITCH_HZ)
        ObjectClass("ellipse_note-185hz", Shape.ELLIPSE, Texture.SOLID, 0.0, _SILENT),
        ObjectClass("rhombus_note-294hz", Shape.RHOMBUS, Texture.SOLID, 0.0, _SILENT),
        ObjectClass("heart_note-466hz", Shape.HEART, Texture.SOLID, 0.0, _SILENT),
        ObjectClass("kite_note-740hz", Shape.KITE, Texture.SOLID, 0.0, _SILENT)),
    "rhythm": (  # textured shapes, a strike pattern each (eval_sounds.RHYTHMS)
        ObjectClass("bowtie_slow-knock", Shape.BOWTIE, Texture.RIPPLES, 0.0, _SILENT),
        ObjectClass("chevron_fast-knock", Shape.CHEVRON, Texture.HATCH, 0.0, _SILENT),
        ObjectClass("house_gallop-knock", Shape.HOUSE, Texture.GRID, 0.0, _SILENT),
        ObjectClass("trapezoid_triplet-knock", Shape.TRAPEZOID, Texture.WAVES, 0.0, _SILENT)),
    "speech": (  # plain flat shapes, a vowel each (eval_sounds.VOWELS)
        ObjectClass("semicircle_vowel-a", Shape.SEMICIRCLE, Texture.SOLID, 0.0, _SILENT),
        ObjectClass("tee_vowel-i", Shape.TEE, Texture.SOLID, 0.0, _SILENT),
        ObjectClass("ell_vowel-u", Shape.ELL, Texture.SOLID, 0.0, _SILENT),
        ObjectClass("bolt_vowel-e", Shape.BOLT, Texture.SOLID, 0.0, _SILENT)),
}
SNR_DB = (10.0, 20.0)  # family sound : background noise


@dataclass(frozen=True)
class FamilySummary:
    """What :func:`write_family` wrote."""

    root: Path  # DIR/Single-source
    clips: dict[str, int]
    twins: int  # twin pairs over all splits


def _scene_rng(seed: int, family: str, split: str, group: int, *more: int) -> np.random.Generator:
    key = (seed, 0xE7A1, FAMILIES.index(family), SPLITS.index(split), group, *more)
    return np.random.default_rng(np.random.SeedSequence(key))


def clip_audio(family: str, kind: int, rng: np.random.Generator) -> np.ndarray:
    """A clip's soundtrack: kind ``kind`` of ``family`` over background noise at an SNR in
    :data:`SNR_DB`, peak-normalised -> (5 s * 16 kHz,) float64 in (-1, 1)."""
    n = CLIP_SECONDS * SAMPLE_RATE
    sound = family_sound(family, kind, n, rng)
    noise = background_noise(n, rng, sample_noise_kind(rng))
    mix = sound + noise / 10 ** (rng.uniform(*SNR_DB) / 20)
    return mix * (rng.uniform(*PEAK) / max(float(np.abs(mix).max()), 1e-12))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_group(root: Path, family: str, split: str, group: int, names: list[str], size: int,
                 seed: int) -> list[dict[str, Any]]:
    """Render one scene and write its twin clips; -> their metadata entries."""
    catalogue = FAMILY_CLASSES[family]
    rng = _scene_rng(seed, family, split, group)
    kinds = [int(k) for k in rng.permutation(len(catalogue))[:int(rng.integers(2, 4))]]
    # colours carry no information: every object gets a random hue (sample_instance: +-10 deg)
    classes = [replace(catalogue[k], hue=float(rng.uniform(0, 360))) for k in kinds]
    background, objects = sample_scene(rng, classes, size)
    frames, masks = zip(*(render(background, objects, t) for t in FRAME_TIMES))
    pngs = [cv2.imencode(".png", img)[1].tobytes() for img in frames]
    sounding = [int(i) for i in rng.permutation(len(kinds))[:len(names)]]
    data = root / "s4_data"
    entries = []
    for j, name in enumerate(names):
        obj, category = sounding[j], catalogue[kinds[sounding[j]]].name
        for k, png in enumerate(pngs, 1):
            _write(data / "visual_frames" / split / category / name / f"{name}_{k}.png", png)
        for k in range(1, (1 if split == "train" else len(FRAME_TIMES)) + 1):
            mask = cv2.imencode(".png", masks[k - 1][obj].astype(np.uint8) * 255)[1]
            _write(data / "gt_masks" / split / category / name / f"{name}_{k}.png", mask.tobytes())
        wav = data / "audio_wav" / split / category / f"{name}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        write_wav(wav, clip_audio(family, kinds[obj], _scene_rng(seed, family, split, group,
                                                                 j + 1)))
        twin = names[1 - j] if len(names) == 2 else None
        entries.append({"name": name, "split": split, "category": category, "group": group,
                        "object": obj, "objects": [catalogue[k].name for k in kinds],
                        "twin": twin})
    return entries


def write_family(out: str | os.PathLike[str], family: str, sizes: dict[str, int], *,
                 size: int = 224, seed: int = 0, overwrite: bool = False) -> FamilySummary:
    """Write ``family``'s S4 set under ``out`` (the AVSBench data root).

    Args:
        out: folder that gets ``Single-source/``.
        family: one of :data:`~pcmanet.data.eval_sounds.FAMILIES`.
        sizes: clips per split, e.g. ``{"train": 150, "val": 20, "test": 40}``; clips come in
            twin pairs (an odd count leaves the split's last clip without a twin).
        size: frame and mask side in pixels.
        seed: everything derives from it (and the family).
        overwrite: replace an existing ``Single-source/`` instead of refusing.

    Raises:
        ValueError: unknown family, bad sizes or size.
        FileExistsError: ``Single-source/`` exists, is not empty, and ``overwrite`` is False.
    """
    if family not in FAMILY_CLASSES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    if size < 32 or seed < 0 or set(sizes) - set(SPLITS) or any(n < 0 for n in sizes.values()):
        raise ValueError(f"need size >= 32, seed >= 0 and sizes over {SPLITS} >= 0")
    root = Path(out) / "Single-source"
    fresh_folder(root, overwrite)
    entries: list[dict[str, Any]] = []
    for split in SPLITS:
        n = sizes.get(split, 0)
        for group in range((n + 1) // 2):
            names = [f"{family}{seed}-{split}-{group:04d}-{j}"
                     for j in range(min(2, n - 2 * group))]
            entries += _write_group(root, family, split, group, names, size, seed)
    with open(root / "s4_meta_data.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "start_time", "category", "split"])
        for e in entries:
            w.writerow([e["name"], 0, e["category"], e["split"]])
    meta = {"generator": "pcmanet.data.eval_families", "family": family, "seed": seed,
            "size": size, "frame_times_s": list(FRAME_TIMES),
            "classes": [c.name for c in FAMILY_CLASSES[family]], "clips": entries}
    (root / "family_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    clips = {s: sum(e["split"] == s for e in entries) for s in SPLITS}
    return FamilySummary(root, clips, sum(e["twin"] is not None for e in entries) // 2)


def read_twins(root: str | os.PathLike[str], split: str) -> dict[str, str]:
    """``{clip name: its twin's name}`` for ``split`` from ``<root>/Single-source/
    family_meta.json`` (root: the AVSBench data root); clips without a twin are left out."""
    meta = json.loads((Path(root) / "Single-source" / "family_meta.json").read_text())
    return {e["name"]: e["twin"] for e in meta["clips"]
            if e["split"] == split and e["twin"] is not None}


def main(argv: list[str] | None = None) -> int:
    """CLI: see the module docstring; prints one summary line."""
    p = Parser(prog="python -m pcmanet.data.eval_families",
               description="Write an evaluation-only S4 sound family.")
    p.add_argument("--family", choices=FAMILIES, required=True)
    p.add_argument("--out", required=True, help="AVSBench data root to write")
    p.add_argument("--train", type=int, default=150)
    p.add_argument("--val", type=int, default=20)
    p.add_argument("--test", type=int, default=40)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        s = write_family(args.out, args.family, {"train": args.train, "val": args.val,
                                                 "test": args.test},
                         size=args.size, seed=args.seed, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.family}: {sum(s.clips.values())} clips {s.clips}, {s.twins} twin pairs "
          f"-> {s.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
