"""Conv + BatchNorm + ReLU, laid out as a Sequential so state_dict keys read `.0` / `.1`."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, groups: int = 1) -> nn.Sequential:
    """(N, in_ch, H, W) -> (N, out_ch, H, W); 'same' padding, conv with bias (as the reference)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups, bias=True),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )
