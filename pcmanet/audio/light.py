"""Light audio encoder: a few strided conv-BN-ReLU blocks over a VGGish log-mel example.

A drop-in for :class:`~pcmanet.audio.vggish.VGGish` in the fast models: same input, same kind of
output (non-negative embedding of width ``out_dim``), at a small fraction of the cost.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn


class ConvBNReLU(nn.Sequential):
    """Conv3x3 (no bias), BatchNorm, ReLU: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_chans),
            nn.ReLU(inplace=True),
        )


class LightAudioEncoder(nn.Module):
    """Log-mel examples (N, 1, 96, 64) -> embeddings (N, out_dim), non-negative.

    Each block halves both axes (96x64 -> 48x32 -> 24x16 -> 12x8 -> 6x4 with four blocks); a
    global average pool, a Linear and a ReLU follow, so the output is non-negative like VGGish's.

    Args:
        out_dim: embedding width.
        widths: output channels of each stride-2 block.
        in_chans: input channels (1 for log-mel).
    """

    def __init__(
        self,
        out_dim: int = 128,
        widths: Sequence[int] = (16, 32, 64, 128),
        in_chans: int = 1,
    ) -> None:
        super().__init__()
        assert len(widths) > 0, "widths must name at least one block"
        self.out_dim = out_dim
        chans = [in_chans, *widths]
        self.blocks = nn.Sequential(
            *(ConvBNReLU(c_in, c_out, stride=2) for c_in, c_out in itertools.pairwise(chans))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(widths[-1], out_dim), nn.ReLU(inplace=True))

    def forward(self, logmel: Tensor) -> Tensor:
        assert logmel.dim() == 4, f"expected (N, C, H, W) log-mel, got {tuple(logmel.shape)}"
        x = self.blocks(logmel)  # (N, widths[-1], H / 2^k, W / 2^k)
        x = self.pool(x).flatten(1)  # (N, widths[-1])
        return self.head(x)  # (N, out_dim)
