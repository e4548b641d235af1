"""pcmanet.visual_probe: the probe reads a cue that is there and finds none where there is none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pcmanet.data.eval_families import write_family
from pcmanet.data.synthetic import main as synthetic_main
from pcmanet.visual_probe import main, probe
from tests.conftest import REPO

DEMO = REPO / "pcmanet" / "assets" / "demo.pt"


def test_the_probe_separates_separable_features_and_not_noise() -> None:
    g = torch.Generator().manual_seed(0)
    names = [f"c{i % 3}" for i in range(90)]
    centres = torch.randn(3, 8, generator=g) * 4
    feats = torch.stack([centres[i % 3] for i in range(90)]) + torch.randn(90, 8, generator=g)
    tr, te = probe(feats[:60], names[:60], feats[60:], names[60:])
    assert tr == 1.0 and te == 1.0
    noise = torch.randn(90, 8, generator=g)
    _, te = probe(noise[:60], names[:60], noise[60:], names[60:])
    assert te < 0.7


@pytest.mark.parametrize("kind", ["demo style (class hues)", "pitch family (random hues)"])
def test_colour_names_the_class_only_where_the_generator_says_so(
        kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if kind.startswith("demo"):
        assert synthetic_main(["--out", str(tmp_path), "--task", "s4", "--train", "24",
                               "--val", "1", "--test", "12", "--size", "64", "--seed", "4",
                               "--quiet"]) == 0
    else:
        write_family(tmp_path, "pitch", {"train": 24, "val": 2, "test": 12}, size=64, seed=4)
    assert main(["--checkpoint", str(DEMO), "--data-root", str(tmp_path), "--image-size", "64",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rgb = result["levels"][-1]
    assert rgb["features"] == "mean RGB" and len(result["levels"]) == 6  # 5 levels (refiner's too)
    if kind.startswith("demo"):
        assert rgb["test_acc"] >= 0.75 and rgb["test_acc"] > 3 * result["chance"]
    else:
        assert rgb["test_acc"] <= 0.5 and result["chance"] == 0.25


def test_a_missing_checkpoint_is_one_error_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--checkpoint", str(tmp_path / "none.pt"), "--data-root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
