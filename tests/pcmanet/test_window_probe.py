"""pcmanet.window_probe: the backbone copy learns kinds from windows, and the CLI reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pcmanet.checkpoint import load_checkpoint
from pcmanet.data import build_dataset
from pcmanet.kind_loss import labelled_objects
from pcmanet.window_probe import main, window_probe
from tests.conftest import REPO

DEMO = REPO / "pcmanet" / "assets" / "demo.pt"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_probe_learns_the_training_objects_and_leaves_the_model_alone(
        pitch_family: Path) -> None:
    """Scored on the training objects themselves, the fine-tuned copy names their kinds well
    above chance; the checkpoint's own backbone is not changed."""
    model, _, _ = load_checkpoint(DEMO)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    train = labelled_objects(build_dataset("s4", str(pitch_family), "train", image_size=64))
    assert train[0].shape[1:] == (3, 64, 64) and train[1].shape[1:] == (1, 64, 64)
    torch.manual_seed(0)
    records, tuned = window_probe(model.backbone, train, train, steps=120, batch=8, every=40)
    assert [r["step"] for r in records] == [40, 80, 120]
    chance = 1 / len(set(train[2]))
    assert records[-1]["test_acc"] >= chance + 0.3, records
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())


def test_the_cli_reports_json_and_refuses_a_bad_checkpoint(
        pitch_family: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "tuned.pt"
    assert main(["--checkpoint", str(DEMO), "--data-root", str(pitch_family), "--steps", "4",
                 "--batch", "4", "--every", "2", "--image-size", "64", "--json",
                 "--save", str(saved)]) == 0
    out = json.loads(capsys.readouterr().out)
    model, _, extra = load_checkpoint(saved)                               # a whole model
    assert extra["window_probe"]["steps"] == 4 and model.backbone is not None
    assert [r["step"] for r in out["records"]] == [2, 4]
    assert out["test_objects"] == 4 * 5 and 0 <= out["records"][-1]["test_acc"] <= 1
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--checkpoint", str(bad), "--data-root", str(pitch_family)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert main(["--checkpoint", str(DEMO), "--data-root", str(pitch_family), "--steps",
                 "0"]) == 2
