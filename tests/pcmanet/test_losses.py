"""Training losses: hand values, the loss training uses (clip_loss: stages, labelled rows,
decoded rows, AVSS), AVSS frame masking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pcmanet.losses import bce_iou_loss, masked_frame_ce, semantic_stage_loss
from pcmanet.train_step import clip_loss


def official_bce_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official form: BCE on probabilities plus mean soft-IoU loss."""
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy(prob, target)
    inter = (prob * target).sum(dim=(2, 3))
    union = (prob + target).sum(dim=(2, 3))
    return bce + (1 - (inter + 1) / (union - inter + 1)).mean()


def test_bce_iou_hand_value() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # BCE = ln 2 at p = 0.5; I = 0.5, U = 4 * 0.5 + 1 = 3 -> 1 - 1.5 / 3.5
    expected = math.log(2) + 1 - 1.5 / 3.5
    assert bce_iou_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_bce_iou_matches_official_form() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(4, 1, 8, 8, generator=gen)
    target = (torch.rand(4, 1, 8, 8, generator=gen) > 0.5).float()
    assert bce_iou_loss(logits, target).item() == pytest.approx(
        official_bce_iou(logits, target).item(), abs=1e-5
    )


def test_bce_iou_gradients_finite_at_extreme_logits() -> None:
    logits = torch.tensor([-200.0, -30.0, 0.0, 30.0, 200.0]).view(1, 1, 1, 5).requires_grad_()
    target = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 5)
    loss = bce_iou_loss(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None
    assert torch.isfinite(logits.grad).all()


def test_bce_iou_on_an_empty_target_pushes_the_prediction_to_empty() -> None:
    """Silent clips: an all-zero target. The soft-IoU term is then 1 - 1 / (sum p + 1): defined
    (no 0/0), 0 only for an empty prediction, and its gradient lowers every logit."""
    target = torch.zeros(2, 1, 8, 8)
    for value, expected_iou in ((-30.0, 0.0), (0.0, 1 - 1 / 33)):
        logits = torch.full((2, 1, 8, 8), value, requires_grad=True)
        loss = bce_iou_loss(logits, target)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        assert torch.isfinite(loss)
        assert (loss - bce).item() == pytest.approx(expected_iou, abs=1e-6)
        loss.backward()
        assert logits.grad is not None and bool((logits.grad >= 0).all())
        assert value < -20 or bool((logits.grad > 0).all())  # descent lowers every logit
    # A small spurious blob costs more than nothing, and more as it grows.
    small, large = torch.full((1, 1, 8, 8), -10.0), torch.full((1, 1, 8, 8), -10.0)
    small[..., :2, :2], large[..., :4, :4] = 10.0, 10.0
    losses = [bce_iou_loss(x, target[:1]).item()
              for x in (torch.full((1, 1, 8, 8), -10.0), small, large)]
    assert losses == sorted(losses) and losses[0] < 0.01


def stage_inputs(bt: int, size: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(bt, 1, size, size, generator=gen) for _ in range(4)]


def binary_batch(b: int, t: int, size: int, labelled: list[int], seed: int
                 ) -> dict[str, torch.Tensor]:
    """A batch as the S4/MS3 loaders give it: masks (B, T, 1, H, W), mask_valid (B, T)."""
    gen = torch.Generator().manual_seed(seed)
    valid = torch.zeros(b, t)
    valid[:, labelled] = 1
    masks = (torch.rand(b, t, 1, size, size, generator=gen) > 0.5).float()
    return {"masks": masks, "mask_valid": valid}


def test_clip_loss_ms3_sums_every_stage_over_every_frame() -> None:
    batch = binary_batch(2, 5, 8, labelled=[0, 1, 2, 3, 4], seed=1)
    stages = stage_inputs(10, 8, seed=1)
    weights = (1.0, 0.5, 2.0, 0.0)
    target = batch["masks"].flatten(0, 1)
    expected = sum(w * bce_iou_loss(s, target) for w, s in zip(weights, stages, strict=True))
    assert clip_loss(stages, batch, weights).item() == pytest.approx(float(expected), abs=1e-6)


def test_clip_loss_s4_scores_only_the_labelled_rows() -> None:
    b, t, size = 3, 5, 6
    batch = binary_batch(b, t, size, labelled=[0], seed=2)
    stages = stage_inputs(b * t, size, seed=2)
    weights = (1.0, 1.0, 1.0, 1.0)
    base = clip_loss(stages, batch, weights)
    target = batch["masks"].flatten(0, 1)
    expected = sum(bce_iou_loss(s[::t], target[::t]) for s in stages)   # rows 0, T, 2T
    assert base.item() == pytest.approx(float(expected), abs=1e-6)

    other = [r for r in range(b * t) if r % t != 0]
    changed = [s.clone() for s in stages]
    for s in changed:
        s[other] = 100 * torch.randn(len(other), 1, size, size)
    assert clip_loss(changed, batch, weights) == base                   # other logits ignored
    noisy = {**batch, "masks": batch["masks"].clone()}
    noisy["masks"][:, 1:] = 1 - noisy["masks"][:, 1:]
    assert clip_loss(stages, noisy, weights) == base                    # and their labels
    changed[0][t] += 1.0                      # row T: the second clip's first frame counts
    assert clip_loss(changed, batch, weights) != base


def test_clip_loss_on_decoded_rows_equals_the_full_decode() -> None:
    """train_forward decodes only some rows; clip_loss on those rows' logits (rows=...) is the
    loss of the full output restricted to them."""
    b, t, size = 2, 5, 8
    batch = binary_batch(b, t, size, labelled=[0, 1, 2, 3, 4], seed=3)
    stages = stage_inputs(b * t, size, seed=3)
    rows = torch.tensor([1, 3, 6, 9])
    weights = (1.0, 1.0, 0.5, 0.5)
    got = clip_loss([s[rows] for s in stages], batch, weights, rows=rows)
    target = batch["masks"].flatten(0, 1)[rows]
    expected = sum(w * bce_iou_loss(s[rows], target)
                   for w, s in zip(weights, stages, strict=True))
    assert got.item() == pytest.approx(float(expected), abs=1e-6)


def test_clip_loss_gradients_reach_every_stage_on_labelled_rows_only() -> None:
    batch = binary_batch(2, 5, 8, labelled=[0], seed=4)
    stages = [s.requires_grad_() for s in stage_inputs(10, 8, seed=4)]
    clip_loss(stages, batch, (1.0, 1.0, 1.0, 1.0)).backward()
    for s in stages:
        assert s.grad is not None and torch.isfinite(s.grad).all()
        assert s.grad[[1, 2, 3, 4, 6, 7, 8, 9]].abs().sum() == 0
        assert s.grad[0].abs().sum() > 0 and s.grad[5].abs().sum() > 0


def test_clip_loss_avss_is_the_frame_masked_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(5)
    b, t, c, size = 2, 3, 4, 8
    labels = torch.randint(0, c, (b, t, size, size), generator=gen)
    valid = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    stages = [torch.randn(b * t, c, size, size, generator=gen) for _ in range(2)]
    got = clip_loss(stages, {"masks": labels, "mask_valid": valid}, (1.0, 0.5))
    expected = semantic_stage_loss(stages, labels.flatten(0, 1), valid.flatten(), (1.0, 0.5))
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_masked_frame_ce_hand_value() -> None:
    c = 4
    logits = torch.zeros(3, c, 2, 2)           # uniform softmax: CE = ln C at every pixel
    labels = torch.randint(0, c, (3, 2, 2))
    weight = torch.tensor([1.0, 1.0, 0.0])
    assert masked_frame_ce(logits, labels, weight).item() == pytest.approx(math.log(c), abs=1e-6)


def test_semantic_stage_loss_ignores_padded_frames() -> None:
    gen = torch.Generator().manual_seed(5)
    bt, c, size = 6, 5, 8
    stages = [torch.randn(bt, c, size // 2, size // 2, generator=gen) for _ in range(4)]
    labels = torch.randint(0, c, (bt, size, size), generator=gen)
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    base = semantic_stage_loss(stages, labels, weight)

    changed = [s.clone() for s in stages]
    for s in changed:
        s[[3, 5]] = 50 * torch.randn(2, c, size // 2, size // 2)
    other_labels = labels.clone()
    other_labels[[3, 5]] = (labels[[3, 5]] + 1) % c
    assert semantic_stage_loss(changed, other_labels, weight).item() == pytest.approx(
        base.item(), abs=1e-6
    )

    keep = weight > 0                          # equals plain mean CE over the real frames
    expected = sum(
        F.cross_entropy(
            F.interpolate(s, size=(size, size), mode="bilinear", align_corners=False)[keep],
            labels[keep],
        )
        for s in stages
    )
    assert base.item() == pytest.approx(float(expected), abs=1e-5)


def test_semantic_stage_loss_padded_frames_get_no_gradient() -> None:
    gen = torch.Generator().manual_seed(6)
    stages = [torch.randn(4, 3, 4, 4, generator=gen).requires_grad_() for _ in range(2)]
    labels = torch.randint(0, 3, (4, 1, 4, 4), generator=gen)       # (B*T, 1, H, W) accepted
    weight = torch.tensor([1.0, 0.0, 1.0, 0.0])
    semantic_stage_loss(stages, labels, weight, weights=(1.0, 1.0)).backward()
    for s in stages:
        assert s.grad is not None and torch.isfinite(s.grad).all()
        assert s.grad[[1, 3]].abs().sum() == 0 and s.grad[[0, 2]].abs().sum() > 0


def test_clip_loss_stage_count_must_match_weights() -> None:
    batch = binary_batch(1, 5, 4, labelled=[0], seed=7)
    with pytest.raises(ValueError):
        clip_loss(stage_inputs(5, 4, seed=7), batch, (1.0, 1.0))
