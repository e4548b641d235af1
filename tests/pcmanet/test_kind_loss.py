"""The object-kind loss (pcmanet/kind_loss.py): what it reads, what it leaves out, and a real
training run with it (resumed, and refused where it cannot apply)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pcmanet.checkpoint import read_weights_file
from pcmanet.data import build_dataset
from pcmanet.kind_loss import BackboneTap, KindHead, masked_mean
from pcmanet.train import main as train_main
from tests.conftest import REPO

TINY = str(REPO / "configs" / "test_tiny.yaml")


def test_the_masked_mean_reads_only_the_object() -> None:
    feature = torch.zeros(1, 2, 4, 4)
    feature[:, 0, :2, :2] = 3.0                                            # inside the object
    feature[:, 1, 2:, 2:] = 5.0                                            # elsewhere
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :4] = 1.0
    assert torch.allclose(masked_mean(feature, mask), torch.tensor([[3.0, 0.0]]))


def _batch(categories: list[str], areas: list[int]) -> dict[str, object]:
    B, T = len(categories), 5
    masks = torch.zeros(B, T, 1, 8, 8)
    for b, a in enumerate(areas):
        masks[b, 0, 0, :a, :a] = 1.0
    valid = torch.zeros(B, T)
    valid[:, 0] = 1
    return {"masks": masks, "mask_valid": valid, "category": categories}


def test_rows_without_a_target_or_a_known_kind_are_left_out() -> None:
    head = KindHead([4, 6, 8], ["bell", "horn"])
    levels = [torch.randn(3, c, 2, 2, requires_grad=True) for c in (4, 6, 8)]
    rows = torch.tensor([0, 5, 10])                                        # first frames
    loss = head.loss(levels, _batch(["horn", "bell", "drum"], [4, 0, 4]), rows)
    loss.backward()
    assert levels[0].grad is None                                          # last 2 levels only
    assert levels[2].grad is not None
    assert bool(levels[2].grad[0].abs().sum() > 0)                         # horn: counted
    assert float(levels[2].grad[1:].abs().sum()) == 0.0                    # empty, unknown: out
    none = head.loss(levels, _batch(["horn", "bell", "drum"], [0, 0, 0]), rows)
    assert float(none) == 0.0


def test_the_tap_keeps_only_calls_with_gradient() -> None:
    class Levels(nn.Module):                                               # a 2-level backbone
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [self.conv(x), self.conv(x)[..., :1, :1]]

    net = Levels()
    with BackboneTap(net) as tap:
        net(torch.zeros(4, 3, 2, 2))
        with torch.no_grad():
            net(torch.zeros(7, 3, 2, 2))
    assert tap.levels is not None and [x.shape[0] for x in tap.levels] == [4, 4]
    net(torch.zeros(1, 3, 2, 2))
    assert tap.levels[0].shape[0] == 4                                     # hook removed


def test_a_run_with_the_kind_loss_trains_saves_its_head_and_resumes(
        tmp_path: Path, pitch_family: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    head_args = ["--config", TINY, "--data-root", str(pitch_family), "--task", "s4", "--out",
                 str(out)]
    args = ["data.image_size=64", "data.num_workers=0", "train.batch_size=4",
            "train.kind_loss=0.5", "data.paste=0.5", "data.hue=1.0", "data.augment=true"]
    assert train_main([*head_args, *args, "train.epochs=2"]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()
               if x.startswith('{"epoch"')]
    assert [r["step"] for r in records] == [2, 4]
    assert all(r["loss"] == r["loss"] for r in records)                    # not NaN
    head = read_weights_file(out / "last.pt")["extra"]["kind_head"]
    kinds = {c.category for c in build_dataset("s4", str(pitch_family), "train").clips}
    assert head["linear.weight"].shape[0] == len(kinds) >= 2               # a logit per kind
    assert "kind_head" not in read_weights_file(out / "best.pt").get("extra", {})
    assert train_main([*head_args, "--resume", *args, "train.epochs=3"]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()
               if x.startswith('{"epoch"')]
    assert [r["step"] for r in records] == [6]


def test_the_kind_loss_is_refused_without_categories(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pcmanet.data.synthetic import main as synthetic_main

    assert synthetic_main(["--out", str(tmp_path), "--task", "ms3", "--train", "2", "--val",
                           "1", "--test", "1", "--size", "64", "--seed", "1", "--quiet"]) == 0
    code = train_main(["--config", TINY, "--data-root", str(tmp_path), "--task", "ms3",
                       "--out", str(tmp_path / "run"), "train.epochs=1", "data.image_size=64",
                       "data.num_workers=0", "train.kind_loss=1"])
    assert code == 2
    assert "train.kind_loss" in capsys.readouterr().err
