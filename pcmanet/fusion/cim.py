"""CIM: confidence-induced masking (docs/pcmanet.md).

A token is *uncertain* (mask 1, becomes a query at the next stage) where the stage's
confidence lies in [1 - threshold, threshold]. Masks progress coarse to fine: a region found
confident at a coarse stage stays excluded at every finer stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def confidence(logits: Tensor) -> Tensor:
    """(F, K, h, w) logits -> (F, 1, h, w) confidence: sigmoid for K = 1, max softmax otherwise."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1).amax(dim=1, keepdim=True)


def uncertain_mask(logits: Tensor, threshold: float) -> Tensor:
    """(F, K, h, w) logits -> (F, 1, h, w) float mask, 1 where 1-threshold <= p <= threshold."""
    p = confidence(logits.detach().float())
    return ((p >= 1 - threshold) & (p <= threshold)).to(logits.dtype)


def progress(mask: Tensor, coarser: Tensor | None) -> Tensor:
    """Keep only tokens also uncertain at the coarser stage: mask * nearest_up(coarser)."""
    if coarser is None:
        return mask
    return mask * F.interpolate(coarser, size=mask.shape[-2:], mode="nearest")
