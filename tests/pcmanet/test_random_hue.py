"""Random hues in the synthetic generator (``--random-hue``): which groups, their colours, and
that nothing else of a set changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcmanet.data import build_dataset
from pcmanet.data.synthetic import main, plan_dataset, scene_classes, write_dataset
from pcmanet.data.synthetic_classes import style_classes

SIZES = {"train": 12, "val": 4, "test": 8}
SIZE = 48
FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seed 5 written plain, with half the groups in random hues (twice), S4 and MS3."""
    roots = {k: tmp_path_factory.mktemp(k) for k in ("plain", "hue", "hue_again")}
    for task in FOLDERS:
        write_dataset(roots["plain"], task, SIZES, size=SIZE, seed=5, silent=0.25)
        for k in ("hue", "hue_again"):
            write_dataset(roots[k], task, SIZES, size=SIZE, seed=5, silent=0.25,
                          random_hue=0.5)
    return roots


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _groups(root: Path, task: str) -> list[dict]:
    return json.loads((root / FOLDERS[task] / "synthetic_meta.json").read_text())["groups"]


@pytest.mark.parametrize("task", list(FOLDERS))
@pytest.mark.parametrize("style", ["shapes", "signs"])
def test_plan_marks_exact_group_counts_and_changes_nothing_else(task: str, style: str) -> None:
    sizes = {"train": 40, "val": 10, "test": 20}
    plain = plan_dataset(task, sizes, seed=2, style=style, silent=0.2)
    assert plan_dataset(task, sizes, seed=2, style=style, silent=0.2, random_hue=0.0) == plain
    plan = plan_dataset(task, sizes, seed=2, style=style, silent=0.2, random_hue=0.3)
    assert plan == plan_dataset(task, sizes, seed=2, style=style, silent=0.2, random_hue=0.3)
    for split in sizes:
        groups = [p for p in plan if p.clips[0].split == split]
        assert sum(p.random_hue for p in groups) == round(0.3 * len(groups))
    for p, q in zip(plan, plain, strict=True):
        assert (p.key, p.classes, p.clips, p.style) == (q.key, q.classes, q.clips, q.style)
    assert all(p.random_hue for p in plan_dataset(task, sizes, seed=2, random_hue=1.0))


def test_bad_fraction_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="random_hue"):
        plan_dataset("s4", {"train": 4}, random_hue=1.5)
    args = ["--out", str(tmp_path), "--task", "s4", "--train", "2", "--val", "0", "--test", "0",
            "--size", "32", "--quiet", "--random-hue", "-0.1"]
    assert main(args) == 2
    assert "random_hue" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.png"))


def test_random_hues_are_seeded_and_spread_over_the_circle() -> None:
    plan = plan_dataset("s4", {"train": 400}, seed=4, random_hue=1.0)
    catalogue = style_classes("shapes")
    offsets = []
    for p in plan:
        classes = scene_classes(p)
        assert classes == scene_classes(p)  # deterministic
        for k, c in zip(p.classes, classes, strict=True):
            assert (c.name, c.shape, c.texture, c.sound) == (
                catalogue[k].name, catalogue[k].shape, catalogue[k].texture, catalogue[k].sound)
            offsets.append((c.hue - catalogue[k].hue) % 360)
    counts, _ = np.histogram(offsets, bins=6, range=(0, 360))
    assert counts.min() > 0.5 * len(offsets) / 6  # no class keeps its colour
    plain = plan_dataset("s4", {"train": 4}, seed=4)
    assert [c.hue for c in scene_classes(plain[0])] == [catalogue[k].hue
                                                          for k in plain[0].classes]


@pytest.mark.parametrize("task", list(FOLDERS))
def test_only_the_frames_of_marked_groups_change(sets: dict[str, Path], task: str) -> None:
    plain, hue = (_files(sets[k] / FOLDERS[task]) for k in ("plain", "hue"))
    assert hue == _files(sets["hue_again"] / FOLDERS[task])  # byte-identical for one seed
    assert plain.keys() == hue.keys()
    groups = _groups(sets["hue"], task)
    marked = {c["name"] for g in groups if g.get("random_hue") for c in g["clips"]}
    assert marked and len(marked) < sum(len(g["clips"]) for g in groups)
    meta = json.loads(hue.pop("synthetic_meta.json"))
    assert meta["random_hue_fraction"] == 0.5
    assert "random_hue_fraction" not in json.loads(plain.pop("synthetic_meta.json"))
    assert not any("random_hue" in g for g in _groups(sets["plain"], task))
    changed = {k for k in hue if hue[k] != plain[k]}
    assert changed and all("visual_frames" in k for k in changed)  # masks, wavs, CSV: same
    owner = {k: n for k in hue for n in marked if n in Path(k).name or f"/{n}/" in k}
    assert {k for k in hue if "visual_frames" in k and k in owner} == changed


def test_loader_reads_a_random_hue_set(sets: dict[str, Path]) -> None:
    dataset = build_dataset("s4", str(sets["hue"]), "test", image_size=SIZE)
    item = dataset[0]
    assert item["frames"].shape[-2:] == (SIZE, SIZE)
