"""Merge AVSBench-layout S4 / MS3 data sets into one root, so a run trains on a mixture.

``python -m pcmanet.data.merge --out DIR [--task s4|ms3] SRC [SRC ...]`` links every clip file
of each ``SRC/<task folder>/<task>_data`` into ``DIR`` (hard links; a copy where the two folders
are on different file systems) and writes the concatenated ``<task>_meta_data.csv`` (the
AVSBench header, the sources' rows in order) plus ``merge_meta.json`` naming the sources and
their clip counts per split. Clip names must be unique over all sources: a clash is refused with
both sources named, before anything is written. The merged root is read by the data sets and
the trainer like any other (e.g. the demo model's wide pre-training: docs/training.md).

Shapes: none; files only. Each source's own meta files (``synthetic_meta.json``,
``family_meta.json``) are recorded by path, not merged.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pcmanet.cli import Parser, fail

from .output import fresh_folder
from .synthetic_plan import TASK_FOLDERS as FOLDERS  # S4, MS3 folders (docs/avsbench.md)

NAME_COLUMNS = ("name", "video_id")  # S4, MS3


@dataclass(frozen=True)
class MergeSummary:
    """What :func:`merge` wrote: the merged task folder and clips per split."""

    root: Path
    clips: dict[str, int]


def _rows(src: Path, task: str) -> tuple[list[str], list[list[str]]]:
    path = src / FOLDERS[task] / f"{task}_meta_data.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; is {src} an AVSBench data root with "
                                f"{task.upper()} data?")
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    if not table or not set(NAME_COLUMNS) & set(table[0]) or "split" not in table[0]:
        raise ValueError(f"{path}: the first row must be the AVSBench header, with 'split' and "
                         "'name' (S4) or 'video_id' (MS3)")
    return table[0], table[1:]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def merge(out: str | os.PathLike[str], sources: Sequence[str | os.PathLike[str]], *,
          task: str = "s4", overwrite: bool = False) -> MergeSummary:
    """Merge ``sources`` (AVSBench data roots) into ``out``; see the module docstring.

    Raises:
        ValueError: unknown task, fewer than two sources, headers that differ, or a clip name
            in two sources.
        FileNotFoundError: a source without the task's meta CSV.
        FileExistsError: ``out``'s task folder exists and is not empty, without ``overwrite``.
    """
    if task not in FOLDERS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(FOLDERS)}")
    if len(sources) < 2:
        raise ValueError("need at least two sources to merge")
    srcs = [Path(s) for s in sources]
    tables = [_rows(s, task) for s in srcs]
    header = tables[0][0]
    owner: dict[str, Path] = {}
    for src, (head, rows) in zip(srcs, tables):
        if head != header:
            raise ValueError(f"{src}: meta CSV header {head} differs from {srcs[0]}'s {header}")
        name_col = head.index(next(c for c in NAME_COLUMNS if c in head))
        for row in rows:
            if row[name_col] in owner:
                raise ValueError(f"clip {row[name_col]!r} is in both {owner[row[name_col]]} and "
                                 f"{src}; clip names must be unique (write the sets with "
                                 "different seeds or styles)")
            owner[row[name_col]] = src
    root = Path(out) / FOLDERS[task]
    fresh_folder(root, overwrite, "pass --overwrite")
    data = f"{task}_data"
    for src in srcs:
        base = src / FOLDERS[task] / data
        for path in sorted(base.rglob("*")):
            if path.is_file():
                _link(path, root / data / path.relative_to(base))
    split_col = header.index("split")
    with open(root / f"{task}_meta_data.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for _, rows in tables:
            w.writerows(rows)
    per_source = [{"root": str(src.resolve()), "clips": dict(Counter(r[split_col] for r in rows))}
                  for src, (_, rows) in zip(srcs, tables)]
    (root / "merge_meta.json").write_text(json.dumps(
        {"generator": "pcmanet.data.merge", "task": task, "sources": per_source}, indent=1) + "\n")
    clips = Counter(r[split_col] for _, rows in tables for r in rows)
    return MergeSummary(root, dict(clips))


def main(argv: list[str] | None = None) -> int:
    """CLI: see the module docstring; prints one summary line."""
    p = Parser(prog="python -m pcmanet.data.merge",
               description="Merge AVSBench-layout data sets into one data root.")
    p.add_argument("sources", nargs="+", help="AVSBench data roots to merge (two or more)")
    p.add_argument("--out", required=True, help="data root to write")
    p.add_argument("--task", choices=list(FOLDERS), default="s4")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        s = merge(args.out, args.sources, task=args.task, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        return fail(str(e))
    print(f"{args.task}: {sum(s.clips.values())} clips {s.clips} from {len(args.sources)} "
          f"sources -> {s.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
