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
from pcmanet.kind_loss import KindHead, masked_mean, object_windows
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


class _Levels(nn.Module):
    """A 2-level backbone: a 1x1 conv and its top-left corner."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x)[:, :4], self.conv(x)]


def _batch(categories: list[str], areas: list[int], size: int = 16) -> dict[str, object]:
    B, T = len(categories), 5
    masks = torch.zeros(B, T, 1, size, size)
    for b, a in enumerate(areas):
        masks[b, 0, 0, 2:2 + a, 3:3 + a] = 1.0
    valid = torch.zeros(B, T)
    valid[:, 0] = 1
    frames = torch.randn(B, T, 3, size, size)
    return {"frames": frames, "masks": masks, "mask_valid": valid, "category": categories}


def test_rows_without_a_target_or_a_known_kind_are_left_out() -> None:
    torch.manual_seed(0)
    backbone, head = _Levels(), KindHead([4, 6], ["bell", "horn"])
    rows = torch.tensor([0, 5, 10])                                        # first frames
    batch = _batch(["horn", "bell", "drum"], [4, 0, 4])
    loss = head.loss(backbone, batch, rows)
    loss.backward()
    assert backbone.conv.weight.grad is not None and float(loss.detach()) > 0
    # the same loss from the one counted row alone: horn, the others (empty, unknown) left out
    only = {**batch, "frames": batch["frames"][:1], "masks": batch["masks"][:1],  # type: ignore[index]
            "mask_valid": batch["mask_valid"][:1], "category": ["horn"]}  # type: ignore[index]
    torch.manual_seed(1)
    a = head.loss(backbone, batch, rows, torch.Generator().manual_seed(3))
    b = head.loss(backbone, only, rows[:1], torch.Generator().manual_seed(3))
    assert torch.allclose(a, b)
    none = head.loss(backbone, _batch(["horn", "bell", "drum"], [0, 0, 0]), rows)
    assert float(none) == 0.0


def test_windows_centre_the_object_and_scale_it_to_two_thirds() -> None:
    """A small and a large object each sit at their window's centre and fill about two thirds
    of its side (1.5 times the box, plus 3 pixels); the random turns, mirrors and channel swaps
    only move values, and a seeded generator repeats them."""
    H = 64
    frames = torch.zeros(2, 3, H, H)
    masks = torch.zeros(2, 1, H, H)
    frames[0, :, 40:48, 10:18] = torch.tensor([1.0, 2.0, 3.0])[:, None, None]  # 8x8 square
    masks[0, :, 40:48, 10:18] = 1
    frames[1, :, 4:60, 4:60] = 1.0                                         # 56x56 square
    masks[1, :, 4:60, 4:60] = 1
    w = object_windows(frames, masks, torch.Generator().manual_seed(0))
    assert w.shape == (2, 3, 32, 32)
    for i, box in ((0, 8), (1, 56)):
        inside = w[i].abs().sum(0) > 0.5                                   # (32, 32)
        ys, xs = inside.nonzero(as_tuple=True)
        side = 32 * box / (1.5 * (box - 1) + 3)                            # expected, pixels
        assert abs(int(ys.max() - ys.min()) + 1 - side) <= 2, (i, side)
        assert abs(int(xs.max() - xs.min()) + 1 - side) <= 2, (i, side)
        assert abs(ys.float().mean() - 15.5) < 1.5 and abs(xs.float().mean() - 15.5) < 1.5
    assert sorted(w[0, :, 16, 16].tolist()) == [1.0, 2.0, 3.0]             # channels swapped only
    again = object_windows(frames, masks, torch.Generator().manual_seed(0))
    assert torch.equal(w, again)
    turns = {tuple(object_windows(frames[:1] * torch.tensor([1.0, 0, 0])[:, None, None],
                                  masks[:1], torch.Generator().manual_seed(s))[0, :, 14:18,
                                                                               14:18].sum((1, 2))
                   .tolist()) for s in range(12)}
    assert len(turns) > 1                                                  # channels do move


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


@pytest.mark.parametrize(("option", "key"), [("train.kind_loss=1", "train.kind_loss"),
                                             ("model.kind_gate=true", "model.kind_gate")])
def test_the_kind_options_are_refused_without_categories(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, key: str) -> None:
    """The kind loss and the kind gate (pcmanet/kind_gate.py) learn from S4 categories."""
    from pcmanet.data.synthetic import main as synthetic_main

    assert synthetic_main(["--out", str(tmp_path), "--task", "ms3", "--train", "2", "--val",
                           "1", "--test", "1", "--size", "64", "--seed", "1", "--quiet"]) == 0
    code = train_main(["--config", TINY, "--data-root", str(tmp_path), "--task", "ms3",
                       "--out", str(tmp_path / "run"), "train.epochs=1", "data.image_size=64",
                       "data.num_workers=0", option])
    assert code == 2
    assert key in capsys.readouterr().err
