"""GF (guided fusion) decoder stage and the output heads (PCMANET.md 4.6, 4.7)."""

from __future__ import annotations

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
