"""AVGA: audio-visual group attention (docs/pcmanet.md).

Each group of C/g channels is weighted, pixel by pixel, by the cosine similarity between
that group's feature vector and a projection of the frame's audio embedding.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pcmanet.layers import conv_bn_relu


class AVGA(nn.Module):
    """Visual (F, C, H, W) and audio (F, C) of the same frames -> (F, C, H, W).

    Args:
        dim: channel width C of both inputs.
        groups: g; channels are split into g chunks of C/g, each with its own cosine map.
    """

    def __init__(self, dim: int, groups: int) -> None:
        super().__init__()
        assert dim % groups == 0, f"groups={groups} must divide dim={dim}"
        self.groups = groups
        self.seq1 = conv_bn_relu(dim, dim, 1, groups=groups)
        # Two linears with no activation between them, then ReLU (as the reference).
        self.fc = nn.Sequential(nn.Linear(dim, dim), nn.Linear(dim, dim // groups), nn.ReLU())
        self.seq2 = conv_bn_relu(dim, dim, 1)

    def forward(self, visual: Tensor, audio: Tensor) -> Tensor:
        Fn, C = visual.shape[:2]
        assert audio.shape == (Fn, C), f"audio {tuple(audio.shape)} must be ({Fn}, {C})"
        x = self.seq1(visual).unflatten(1, (self.groups, C // self.groups))  # (F, g, C/g, H, W)
        a = F.normalize(self.fc(audio), dim=1)                                 # (F, C/g)
        # One cosine map per group: normalised chunk . normalised audio.
        maps = (F.normalize(x, dim=2) * a[:, None, :, None, None]).sum(2, keepdim=True)
        # maps: (F, g, 1, H, W)
        return self.seq2((x * maps).flatten(1, 2))                             # (F, C, H, W)
