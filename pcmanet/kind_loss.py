"""Auxiliary object-kind loss (S4 training): the backbone has to tell the sounding object's kind
from its own features.

The segmentation loss teaches the backbone only through the decoder, and on a 150-clip set of
flat shapes in random colours it learns each training object rather than the kinds
(``python -m pcmanet.visual_probe``: near-chance test accuracy at every level, before and after
such a fine-tune). Here a linear head reads the backbone's last two levels, averaged inside the
labelled frame's target mask, and names the clip's S4 category; its cross-entropy, weighted by
``train.kind_loss``, joins the segmentation loss. The head is a training aid: it is not part of
the model and not in best.pt (last.pt keeps it, to resume).

Shapes: backbone levels (F, C_k, h_k, w_k) of the F rows that keep their gradient, masks
(F, 1, H, W), logits (F, K) over the K training categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 2  # the backbone's last two levels (strides 16 and 32 for the light backbones)


def masked_mean(feature: Tensor, masks: Tensor) -> Tensor:
    """(F, C, h, w) features and (F, 1, H, W) 0/1 masks -> (F, C) means inside each mask."""
    m = F.interpolate(masks.to(feature.dtype), size=feature.shape[-2:], mode="area")
    return (feature * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1e-6)


class KindHead(nn.Module):
    """Linear head over masked means of the last :data:`LEVELS` backbone levels.

    Args:
        channels: channels of every backbone level, in order.
        classes: the training categories; logit k is ``classes[k]``.
    """

    def __init__(self, channels: Sequence[int], classes: Sequence[str]) -> None:
        super().__init__()
        self.classes = list(classes)
        self.index = {c: k for k, c in enumerate(self.classes)}
        self.linear = nn.Linear(sum(channels[-LEVELS:]), len(self.classes))

    def forward(self, levels: Sequence[Tensor], masks: Tensor) -> Tensor:
        """levels: backbone outputs of F rows; masks (F, 1, H, W) -> logits (F, K)."""
        pooled = [masked_mean(x.float(), masks) for x in levels[-LEVELS:]]
        return self.linear(torch.cat(pooled, dim=1))                        # type: ignore[no-any-return]

    def loss(self, levels: Sequence[Tensor], batch: dict[str, Any], rows: Tensor) -> Tensor:
        """Cross-entropy of the kind of each row's target object.

        levels: backbone outputs of exactly ``rows`` (F of the batch's B*T clip-major rows);
        rows without a target (an empty mask: silence, a sound from out of view) or whose
        category the head does not know are left out; 0 when none is left.
        """
        T = batch["mask_valid"].shape[1]
        masks = batch["masks"].flatten(0, 1).index_select(0, rows)          # (F, 1, H, W)
        names = [batch["category"][int(r) // T] for r in rows]
        labels = torch.tensor([self.index.get(n, -1) for n in names], device=masks.device)
        keep = (masks.flatten(1).sum(1) > 0) & (labels >= 0)                 # (F,)
        if not bool(keep.any()):
            return masks.new_zeros(())
        idx = keep.nonzero().squeeze(1)
        logits = self(levels=[x.index_select(0, idx) for x in levels[-LEVELS:]],
                      masks=masks.index_select(0, idx))
        return F.cross_entropy(logits, labels.index_select(0, idx))


class BackboneTap:
    """Keeps the outputs of a backbone's calls made with gradient enabled (a forward hook).

    ``with tap: model(...)`` then ``tap.levels``: the backbone levels of the last such call.
    Only gradient-keeping calls count, so with ``encoder_grad="labelled"`` (the other frames
    are encoded under no_grad) these are the labelled rows' levels.
    """

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone
        self.levels: list[Tensor] | None = None
        self._handle: Any = None

    def _hook(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            self.levels = list(output)

    def __enter__(self) -> BackboneTap:
        self.levels = None
        self._handle = self.backbone.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        self._handle = None


def backbone_channels(backbone: nn.Module, image_size: int = 64) -> list[int]:
    """Channels of each level the backbone returns (one small forward without gradient)."""
    param = next(backbone.parameters())
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, image_size, image_size, device=param.device))
    backbone.train(was_training)
    return [int(x.shape[1]) for x in out]
