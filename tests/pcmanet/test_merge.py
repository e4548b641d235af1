"""Merging AVSBench-layout data sets (pcmanet.data.merge): the loader reads the union, files are
linked not copied, and clashes or broken sources are refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcmanet.data import build_dataset
from pcmanet.data.merge import main, merge
from pcmanet.data.synthetic import write_dataset

SIZES = {"train": 4, "val": 2, "test": 2}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    for task in ("s4", "ms3"):
        write_dataset(a, task, SIZES, size=48, seed=1)
        write_dataset(b, task, SIZES, size=48, seed=2, style="wide", random_hue=1.0)
    return a, b


@pytest.mark.parametrize("task", ["s4", "ms3"])
def test_the_loader_reads_the_union(sources: tuple[Path, Path], tmp_path: Path, task: str
                                    ) -> None:
    a, b = sources
    summary = merge(tmp_path, [a, b], task=task)
    assert summary.clips == {k: 2 * v for k, v in SIZES.items()}
    for split, n in SIZES.items():
        merged = build_dataset(task, tmp_path, split, image_size=48)
        parts = [build_dataset(task, src, split, image_size=48) for src in (a, b)]
        assert len(merged) == 2 * n
        names = {merged[i]["name"] for i in range(len(merged))}
        assert names == {p[i]["name"] for p in parts for i in range(n)}
    meta = json.loads((summary.root / "merge_meta.json").read_text())
    assert [s["clips"] for s in meta["sources"]] == [SIZES, SIZES]


def test_files_are_linked_not_copied(sources: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = sources
    summary = merge(tmp_path, sources)
    wav = next((a / "Single-source").rglob("*.wav"))
    linked = summary.root / wav.relative_to(a / "Single-source")
    assert linked.stat().st_ino == wav.stat().st_ino


def test_clashing_names_are_refused_before_writing(sources: tuple[Path, Path], tmp_path: Path
                                                   ) -> None:
    a, _ = sources
    with pytest.raises(ValueError, match=r"in both .* clip names must be unique"):
        merge(tmp_path / "m", [a, a])
    assert not (tmp_path / "m").exists()


def test_bad_sources_and_existing_output(sources: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    a, b = sources
    assert main(["--out", str(tmp_path / "x"), str(a), str(tmp_path)]) == 2
    assert "s4_meta_data.csv: no such file" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), str(a)]) == 2
    assert "at least two sources" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["--out", str(out), str(a), str(b)]) == 0
    assert "s4: 16 clips" in capsys.readouterr().out
    assert main(["--out", str(out), str(a), str(b)]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["--out", str(out), "--overwrite", str(b), str(a)]) == 0
