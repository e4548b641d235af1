"""Training losses of the official PCMANet recipe (docs/pcmanet.md).

- `bce_iou_loss`: BCE + soft-IoU on one logit map per frame (S4/MS3 "BCEIOU").
- (the binary multi-stage loss over the labelled frames is `pcmanet.train_step.clip_loss`).
- `semantic_stage_loss`: weighted sum over stages of the AVSS frame-masked cross-entropy.

Stage logits may come at a lower resolution than the target; they are then upsampled
bilinearly (align_corners=False) to the target size, as the official model does in its heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_STAGE_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # the official recipe weighs all 4 outputs by 1


def bce_iou_loss(logits: Tensor, target: Tensor) -> Tensor:
    """BCE + soft-IoU: logits (N, 1, H, W), target (N, 1, H, W) in [0, 1] -> 0-dim loss.

    BCE(sigmoid(x), y) averaged over all pixels and samples, plus the mean over samples of
    1 - (I + 1) / (U - I + 1) with I = sum p*y and U = sum (p + y) per image, p = sigmoid(x).
    BCE is computed from logits for stability; it equals the official BCE(sigmoid(x), y) except
    that the official log is clamped at -100 (|x| > ~100).
    """
    assert logits.shape == target.shape, f"{tuple(logits.shape)} != {tuple(target.shape)}"
    assert logits.dim() == 4, f"expected (N, 1, H, W), got {tuple(logits.shape)}"
    target = target.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target)               # mean over N*H*W
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(2, 3))                                 # (N, 1)
    union = (prob + target).sum(dim=(2, 3))                                 # (N, 1)
    iou = 1 - (inter + 1) / (union - inter + 1)                             # (N, 1)
    return bce + iou.mean()


def semantic_stage_loss(
    stage_logits: Sequence[Tensor],
    labels: Tensor,
    frame_weight: Tensor,
    weights: Sequence[float] = DEFAULT_STAGE_WEIGHTS,
) -> Tensor:
    """Sum over stages of weight * `masked_frame_ce`: each logits (B*T, C, h, w) -> 0-dim loss.

    Args:
        stage_logits: one (B*T, C, h, w) class-logit map per decoder stage.
        labels: (B*T, H, W) or (B*T, 1, H, W) int64 class indices.
        frame_weight: (B*T,) float, the official gt_temporal_mask_flag (0 for padded frames).
        weights: one weight per stage.
    """
    assert len(weights) == len(stage_logits), f"{len(weights)} weights, {len(stage_logits)} stages"
    if labels.dim() == 4 and labels.shape[1] == 1:
        labels = labels.squeeze(1)                                          # (B*T, H, W)
    total = stage_logits[0].new_zeros(())
    for weight, logits in zip(weights, stage_logits, strict=True):
        total = total + weight * masked_frame_ce(_resize_to(logits, labels), labels, frame_weight)
    return total


def masked_frame_ce(logits: Tensor, labels: Tensor, frame_weight: Tensor) -> Tensor:
    """AVSS masked CE: logits (BF, C, H, W), labels (BF, H, W), frame_weight (BF,) -> 0-dim.

    Per-pixel cross-entropy averaged per frame, weighted by frame_weight and divided by its
    sum, as the official F10_IoU_BCELoss. An all-zero frame_weight gives NaN, as officially.
    """
    BF = logits.shape[0]
    assert labels.shape == (BF, *logits.shape[2:]), (
        f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}"
    )
    assert frame_weight.shape == (BF,), f"frame_weight {tuple(frame_weight.shape)} != {(BF,)}"
    ce = F.cross_entropy(logits, labels.long(), reduction="none")          # (BF, H, W)
    per_frame = ce.mean(dim=(1, 2))                                         # (BF,)
    frame_weight = frame_weight.to(per_frame.dtype)
    return (per_frame * frame_weight).sum() / frame_weight.sum()


def _resize_to(logits: Tensor, target: Tensor) -> Tensor:
    """Bilinear (align_corners=False) upsampling of logits (N, K, h, w) to target's (H, W)."""
    size = tuple(target.shape[-2:])
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
