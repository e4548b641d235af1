"""AVSBench metrics vs literal loop versions of the official rules (docs/avsbench.md section 6)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from pcmanet.metrics import (
    AVSMeter,
    SemanticMeter,
    SemanticStats,
    f_score,
    frame_ious,
    mask_area,
    mask_iou,
    semantic_stats,
)

TOL = 1e-6

# ------------------------------------------------------------------------------------------
# Literal versions: straight loops per frame, per threshold and per class, float32.
# ------------------------------------------------------------------------------------------


def literal_mask_iou(logits: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    n, h, w = logits.shape
    total = torch.zeros((), dtype=torch.float32)
    for i in range(n):
        p = (torch.sigmoid(logits[i]) > 0.5).float()
        g = target[i].float()
        if g.sum() > 0:
            j = (p * g).sum() / (torch.max(p, g).sum() + eps)
        else:
            j = ((1 - p) * (1 - g)).sum() / (h * w + eps)
        total = total + j
    return total / n


def literal_f_score(logits: Tensor, target: Tensor, pr_num: int = 255, beta2: float = 0.3) -> float:
    prob = torch.sigmoid(logits)
    thresholds = torch.linspace(0, 1 - 1e-10, pr_num)
    frame_curves = []
    for i in range(logits.shape[0]):
        g = target[i].float()
        if torch.mean(g) == 0.0:
            continue
        f = torch.zeros(pr_num)
        for j in range(pr_num):
            y = (prob[i] >= thresholds[j]).float()
            tp = (y * g).sum()
            prec = tp / (y.sum() + 1e-20)
            rec = tp / (g.sum() + 1e-20)
            value = (1 + beta2) * prec * rec / (beta2 * prec + rec)
            f[j] = 0.0 if torch.isnan(value) else value
        frame_curves.append(f)
    if not frame_curves:
        return 0.0
    mean = torch.zeros(pr_num)
    for f in frame_curves:
        mean = mean + f
    return (mean / len(frame_curves)).max().item()


def literal_semantic(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    bf, c = logits.shape[:2]
    pred = torch.argmax(torch.softmax(logits, dim=1), dim=1)
    iou, fs = torch.zeros(bf, c), torch.zeros(bf, c)
    present = torch.zeros(bf, c, dtype=torch.bool)
    for f in range(bf):
        for k in range(c):
            inter = ((pred[f] == k) & (target[f] == k)).sum().float()
            a_pred = (pred[f] == k).sum().float()
            a_gt = (target[f] == k).sum().float()
            union = a_pred + a_gt - inter
            iou[f, k] = inter / (union + 2.220446049250313e-16)
            pr, re = inter / a_pred, inter / a_gt
            value = 1.3 * pr * re / (0.3 * pr + re)
            fs[f, k] = 0.0 if torch.isnan(value) else value
            present[f, k] = union != 0
    return iou, fs, present


def literal_semantic_scores(frames: list[tuple[Tensor, Tensor, Tensor]]) -> dict[str, float]:
    c = frames[0][0].shape[1]
    iou_sum, f_sum, count = [0.0] * c, [0.0] * c, [0] * c
    for iou, fs, present in frames:
        for f in range(iou.shape[0]):
            for k in range(c):
                iou_sum[k] += float(iou[f, k])
                f_sum[k] += float(fs[f, k])
                count[k] += int(present[f, k])
    iou_c = [s / n if n else 0.0 for s, n in zip(iou_sum, count, strict=True)]
    f_c = [s / n if n else 0.0 for s, n in zip(f_sum, count, strict=True)]
    return {
        "miou": sum(iou_c) / c,
        "fscore": sum(f_c) / c,
        "miou_no_bg": sum(iou_c[:-1]) / (c - 1),
        "fscore_no_bg": sum(f_c[:-1]) / (c - 1),
    }


# ------------------------------------------------------------------------------------------
# Random batches
# ------------------------------------------------------------------------------------------


def random_batch(n: int, h: int, w: int, kind: str, seed: int) -> tuple[Tensor, Tensor]:
    """logits (n, h, w) float32 and target (n, h, w) 0/1 of one flavour of test case."""
    gen = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, h, w, generator=gen) < 0.3).float()
    logits = 3 * torch.randn(n, h, w, generator=gen)
    if kind == "empty_frames":
        target[:: max(2, n // 2)] = 0
    elif kind == "all_empty":
        target.zero_()
    elif kind == "zero_logits":
        logits[torch.rand(n, h, w, generator=gen) < 0.5] = 0.0
    elif kind == "large":
        logits = 20 * torch.sign(torch.randn(n, h, w, generator=gen))
    elif kind == "perfect":
        logits = torch.where(target > 0, 20.0, -20.0)
    elif kind == "on_thresholds":  # sigmoid lands on or next to the thresholds themselves
        k = torch.randint(0, 255, (n, h, w), generator=gen).double()
        logits = torch.logit(k / 254, eps=1e-12).float()
    return logits, target


KINDS = ["plain", "empty_frames", "all_empty", "zero_logits", "large", "perfect", "on_thresholds"]
SHAPES = [(1, 4, 4), (5, 16, 12), (10, 24, 24), (3, 7, 33)]


def case_seed(kind: str, shape: tuple[int, int, int]) -> int:
    return 100 * KINDS.index(kind) + 10 * SHAPES.index(shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_mask_iou_matches_literal(kind: str, shape: tuple[int, int, int]) -> None:
    logits, target = random_batch(*shape, kind=kind, seed=case_seed(kind, shape))
    got = mask_iou(logits, target)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert abs(got.item() - literal_mask_iou(logits, target).item()) < TOL


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_f_score_matches_literal(kind: str, shape: tuple[int, int, int]) -> None:
    logits, target = random_batch(*shape, kind=kind, seed=case_seed(kind, shape) + 1)
    got = f_score(logits, target)
    assert isinstance(got, float)
    assert abs(got - literal_f_score(logits, target)) < TOL


def test_f_score_fractional_gt_and_few_thresholds() -> None:
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(4, 9, 9, generator=gen)
    target = torch.randint(0, 3, (4, 9, 9), generator=gen).float() / 2  # values 0, 0.5, 1
    for num in (2, 17, 255):
        assert abs(f_score(logits, target, num) - literal_f_score(logits, target, num)) < TOL


def test_f_score_chunked_frames_match(monkeypatch: pytest.MonkeyPatch) -> None:
    import pcmanet.metrics as metrics

    logits, target = random_batch(6, 10, 10, kind="empty_frames", seed=3)
    full = f_score(logits, target)
    monkeypatch.setattr(metrics, "_MAX_CHUNK_ELEMS", 100)  # one frame per chunk
    assert f_score(logits, target) == full


def test_channel_dim_is_squeezed() -> None:
    logits, target = random_batch(4, 8, 8, kind="plain", seed=11)
    assert mask_iou(logits[:, None], target[:, None]) == mask_iou(logits, target)
    assert f_score(logits[:, None], target[:, None]) == f_score(logits, target)


# ------------------------------------------------------------------------------------------
# Hand cases, S4/MS3
# ------------------------------------------------------------------------------------------


def test_mask_iou_counted_4x4() -> None:
    target = torch.zeros(1, 4, 4)
    target[0, :2, :2] = 1                      # 4 GT pixels
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, :3, :2] = 5.0                    # 6 predicted pixels covering the GT
    assert mask_iou(logits, target).item() == pytest.approx(4 / 6, abs=1e-6)


def test_mask_iou_empty_gt_scores_background_fraction() -> None:
    target = torch.zeros(1, 4, 4)
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, 0, :] = 5.0                      # 4 of 16 pixels predicted foreground
    assert mask_iou(logits, target).item() == pytest.approx(12 / 16, abs=1e-6)


def test_mask_iou_strict_threshold_at_logit_zero() -> None:
    zeros = torch.zeros(2, 4, 4)
    full, empty = torch.ones(1, 4, 4), torch.zeros(1, 4, 4)
    assert mask_iou(zeros[:1], full).item() == 0.0                  # 0 -> background
    assert mask_iou(zeros[:1], empty).item() == pytest.approx(1.0, abs=1e-6)
    assert mask_iou(torch.full((1, 4, 4), 1e-8), full).item() == 0.0  # sigmoid == 0.5 still
    assert mask_iou(torch.full((1, 4, 4), 1e-3), full).item() == pytest.approx(1.0, abs=1e-6)


def test_frame_ious_and_mask_area_per_frame() -> None:
    target = torch.zeros(3, 4, 4)
    target[0, :2, :2] = 1                      # frame 0: 4 GT pixels; frames 1, 2: empty GT
    logits = torch.full((3, 4, 4), -5.0)
    logits[0, :3, :2] = 5.0                    # 6 pixels
    logits[1, 0, :] = 5.0                      # 4 pixels on an empty GT
    ious = frame_ious(logits, target)
    assert ious.shape == (3,)
    assert ious.tolist() == pytest.approx([4 / 6, 12 / 16, 1.0], abs=1e-6)
    assert mask_iou(logits, target).item() == pytest.approx(ious.mean().item(), abs=1e-7)
    assert mask_area(logits).tolist() == [6 / 16, 4 / 16, 0.0]
    assert mask_area(logits[:, None]).shape == (3,)  # (N, 1, H, W) is squeezed
    assert mask_area(torch.zeros(1, 4, 4)).item() == 0.0  # logit 0 is background


def test_mask_iou_is_mean_over_frames() -> None:
    target = torch.ones(2, 4, 4)
    logits = torch.stack([torch.full((4, 4), 5.0), torch.full((4, 4), -5.0)])
    assert mask_iou(logits, target).item() == pytest.approx(0.5, abs=1e-6)


def test_f_score_perfect_and_empty() -> None:
    target = torch.zeros(3, 6, 6)
    target[0, 1:4, 2:5] = 1
    target[1, 0, :] = 1                        # frame 2 has an empty GT and is skipped
    logits = torch.where(target > 0, 20.0, -20.0)
    assert f_score(logits, target) == pytest.approx(1.0, abs=1e-6)
    assert f_score(logits, torch.zeros_like(target)) == 0.0


def test_f_score_takes_max_after_mean() -> None:
    # Frame A is perfect at thresholds in (1e-4, 0.3], frame B at thresholds in (0.6, 0.9].
    target = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])           # (2, 1, 2)
    prob = torch.tensor([[[0.3, 1e-4]], [[0.9, 0.6]]])
    logits = torch.logit(prob)
    f_b_low = 1.3 * 0.5 * 1.0 / (0.3 * 0.5 + 1.0)                  # B predicts both pixels
    assert f_score(logits[:1], target[:1]) == pytest.approx(1.0, abs=1e-6)
    assert f_score(logits[1:], target[1:]) == pytest.approx(1.0, abs=1e-6)
    assert f_score(logits, target) == pytest.approx((1.0 + f_b_low) / 2, abs=1e-6)


def test_avs_meter_means_over_batches_not_frames() -> None:
    meter = AVSMeter()
    sizes = (10, 10, 5)                        # 2, 2 and 1 videos of 5 frames
    batches = [random_batch(n, 8, 8, kind="empty_frames", seed=s) for s, n in enumerate(sizes)]
    per_batch = [meter.update(lo, ta, n_videos=len(lo) // 5) for lo, ta in batches]
    assert meter.n_batches == 3 and meter.n_videos == 5 and meter.n_frames == 25
    assert meter.miou == pytest.approx(sum(m for m, _ in per_batch) / 3, abs=1e-12)
    assert meter.fscore == pytest.approx(sum(f for _, f in per_batch) / 3, abs=1e-12)
    for (miou, fs), (logits, target) in zip(per_batch, batches, strict=True):
        assert abs(miou - literal_mask_iou(logits, target).item()) < TOL
        assert abs(fs - literal_f_score(logits, target)) < TOL


def test_avs_meter_short_last_batch_weighs_like_a_full_one() -> None:
    full = torch.ones(4, 2, 2)
    good, bad = torch.full((4, 2, 2), 5.0), torch.full((4, 2, 2), -5.0)
    meter = AVSMeter()
    meter.update(good, full)                  # 4 frames at J = 1
    meter.update(bad[:1], full[:1])           # 1 frame at J = 0
    assert meter.miou == pytest.approx(0.5, abs=1e-6)   # per-frame mean would be 0.8
    assert meter.summary()["n_frames"] == 5


def test_avs_meter_empty_is_nan_and_reset() -> None:
    meter = AVSMeter()
    assert math.isnan(meter.miou) and math.isnan(meter.fscore)
    meter.add(0.5, 0.25, n_videos=1, n_frames=5)
    assert (meter.miou, meter.fscore) == (0.5, 0.25)
    meter.reset()
    assert meter.n_batches == 0 and math.isnan(meter.miou)


# ------------------------------------------------------------------------------------------
# AVSS
# ------------------------------------------------------------------------------------------


def random_semantic(bf: int, c: int, h: int, w: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(bf, c, h, w, generator=gen)
    target = torch.randint(0, c, (bf, h, w), generator=gen)
    target[0] = 0                              # a background-only frame
    target[-1, : h // 2] = torch.randint(0, 2, (h // 2, w), generator=gen)
    return logits, target


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (6, 7, 9, 5), (4, 71, 8, 8)])
def test_semantic_stats_match_literal(shape: tuple[int, int, int, int]) -> None:
    logits, target = random_semantic(*shape, seed=sum(shape))
    stats = semantic_stats(logits, target)
    iou, fs, present = literal_semantic(logits, target)
    assert stats.iou.shape == shape[:2] and stats.iou.dtype == torch.float32
    assert (stats.iou - iou).abs().max().item() < TOL
    assert (stats.fscore - fs).abs().max().item() < TOL
    assert torch.equal(stats.present, present)


def test_semantic_meter_matches_literal_aggregation() -> None:
    meter, frames = SemanticMeter(num_classes=6), []
    for seed, bf in enumerate((4, 4, 2)):                  # short last batch: no effect
        logits, target = random_semantic(bf, 6, 8, 8, seed=seed)
        meter.update(logits, target)
        frames.append(literal_semantic(logits, target))
    expected = literal_semantic_scores(frames)
    for key, value in expected.items():
        assert abs(meter.summary()[key] - value) < TOL, key
    assert meter.n_frames == 10


def test_semantic_hand_case_absent_class_and_no_bg_quirk() -> None:
    target = torch.tensor([[[0, 0], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])
    logits = 5 * torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    stats = semantic_stats(logits, target)
    f0 = 1.3 * 1.0 * 0.5 / (0.3 * 1.0 + 0.5)              # class 0: Pr 1, Re 1/2
    f1 = 1.3 * (2 / 3) * 1.0 / (0.3 * (2 / 3) + 1.0)      # class 1: Pr 2/3, Re 1
    assert stats.iou[0].tolist() == pytest.approx([1 / 2, 2 / 3, 0.0], abs=1e-6)
    assert stats.fscore[0].tolist() == pytest.approx([f0, f1, 0.0], abs=1e-6)
    assert stats.present[0].tolist() == [True, True, False]
    meter = SemanticMeter(num_classes=3)
    meter.add(stats)
    assert meter.miou == pytest.approx((1 / 2 + 2 / 3 + 0) / 3, abs=1e-6)  # absent counts 0
    assert meter.miou_no_bg == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-6)  # drops index 2
    assert meter.fscore_no_bg == pytest.approx((f0 + f1) / 2, abs=1e-6)
    assert meter.class_count.tolist() == [1, 1, 0]


def test_semantic_argmax_ties_go_to_lowest_index() -> None:
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 1:, 0, 0] = 4.0                  # tie between classes 1 and 2
    stats = semantic_stats(logits, torch.tensor([[[1, 2]]]))
    # pixel 0 -> class 1 (correct); pixel 1 -> class 0 (all logits tie)
    assert stats.iou[0].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)
    assert stats.present[0].tolist() == [True, True, True]


def test_semantic_meter_averages_over_present_frames_only() -> None:
    iou = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    present = torch.tensor([[True, False], [True, False]])
    meter = SemanticMeter(num_classes=2)
    meter.add(SemanticStats(iou=iou, fscore=iou, present=present))
    meter.add(SemanticStats(iou=torch.tensor([[0.0, 0.3]]), fscore=torch.zeros(1, 2),
                            present=torch.tensor([[False, True]])))
    assert meter.per_class_iou.tolist() == pytest.approx([0.75, 0.3])
    assert meter.miou == pytest.approx((0.75 + 0.3) / 2)
