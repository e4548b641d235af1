"""GF (guided fusion) decoder stage and the output heads (docs/pcmanet.md), and the
optional stride-2 mask refiner (ours, not in the reference: model.refine_dim)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcmanet.layers import conv_bn_relu


class GuidedFusion(nn.Module):
    """Fuse a stage's map L, the coarser decoder state H and the attention map G.

    L (F, C, H, W), H (F, C, H', W') or None, G (F, C, H, W) -> (F, C, H, W).
    Coarsest stage (no H): seq3(L + seq1(G)). Other stages: seq3(L + seq1(up(H)) + seq2(G)),
    `up` bilinear to L's size. The reference also holds an unused `seq2` at the coarsest
    stage; it is not built here.

    Args:
        dim: channel width C.
        has_coarser: whether a coarser decoder state H is fused (False at the coarsest stage).
    """

    def __init__(self, dim: int, has_coarser: bool) -> None:
        super().__init__()
        self.has_coarser = has_coarser
        self.seq1 = conv_bn_relu(dim, dim, 3)
        if has_coarser:
            self.seq2 = conv_bn_relu(dim, dim, 3)
        self.seq3 = conv_bn_relu(dim, dim, 3)

    def forward(self, low: Tensor, high: Tensor | None, guide: Tensor) -> Tensor:
        if not self.has_coarser:
            return self.seq3(low + self.seq1(guide))
        assert high is not None, "this stage fuses a coarser decoder state"
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.seq3(low + self.seq1(high) + self.seq2(guide))


def output_head(dim: int, hidden: int, num_classes: int) -> nn.Sequential:
    """(F, dim, H, W) -> logits (F, num_classes, H, W): conv3x3-BN-ReLU then conv1x1."""
    return nn.Sequential(
        nn.Conv2d(dim, hidden, 3, padding=1),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, num_classes, 1),
    )


class MaskRefiner(nn.Module):
    """Refine the finest stage's logits at stride 2 from the backbone's stride-2 features.

    Not part of PCMANet (model.refine_dim > 0 turns it on). The reference's finest output is
    at stride 4, which blurs small objects; this adds a residual computed at stride 2:

        fine = project(x2)                                   per frame, cacheable
        h = conv3x3-BN-ReLU(cat[fine + up(squeeze(state)), up(logits)])
        refined = up(logits) + conv3x3(h)

    `up` is bilinear to the stride-2 size. The last conv starts at zero, so a model trained
    without the refiner gives (bilinearly) the same masks before fine-tuning.

    Args:
        fine_channels: channels of the backbone's stride-2 level.
        dim: the decoder width C (channels of the finest GF state).
        width: the refiner's width r.
        num_classes: K.
    """

    def __init__(self, fine_channels: int, dim: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.project = conv_bn_relu(fine_channels, width, 1)
        self.squeeze = nn.Conv2d(dim, width, 1)
        self.mix = conv_bn_relu(width + num_classes, width, 3)
        self.out = nn.Conv2d(width, num_classes, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        assert self.out.bias is not None
        nn.init.zeros_(self.out.bias)

    def forward(self, fine: Tensor, state: Tensor, logits: Tensor) -> Tensor:
        """fine (F, r, H2, W2) from `project`, state (F, C, H4, W4), logits (F, K, H4, W4)
        -> refined logits (F, K, H2, W2)."""
        size = fine.shape[-2:]
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        ctx = F.interpolate(self.squeeze(state), size=size, mode="bilinear", align_corners=False)
        return up + self.out(self.mix(torch.cat([fine + ctx, up], dim=1)))
