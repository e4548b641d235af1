"""Light audio encoder: a few strided conv-BN-ReLU blocks over a VGGish log-mel example.

A drop-in for :class:`~pcmanet.audio.vggish.VGGish` in the fast models: same input, same kind of
output (non-negative embedding of width ``out_dim``), at a small fraction of the cost.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

SUMMARY_RATES = 24  # envelope modulation bins 1..24 of a 96-frame example (~1-25 Hz)


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

    The conv stack plus the global pool is nearly shift-invariant along the mel axis, and a
    harmonic note's pitch is such a shift: the encoder alone hardly tells pitches apart.
    ``summary=True`` adds, before the final ReLU, a Linear of a fixed summary of the example:
    its band profile (mean over time per mel band, standardised; 64 values: pitch, formants)
    and the modulation spectrum of its loudness envelope (|DFT| bins 1..24 of the mean over
    bands, normalised to sum 1: pulse rate, rhythm). That Linear starts at zero, so a model
    loaded from weights trained without it computes exactly what it did, until it learns.

    Args:
        out_dim: embedding width.
        widths: output channels of each stride-2 block.
        in_chans: input channels (1 for log-mel).
        summary: add the band-profile / modulation branch (``summary``, zero-initialised).
    """

    def __init__(
        self,
        out_dim: int = 128,
        widths: Sequence[int] = (16, 32, 64, 128),
        in_chans: int = 1,
        summary: bool = False,
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
        self.summary: nn.Linear | None = None
        if summary:
            self.summary = nn.Linear(64 + SUMMARY_RATES, out_dim)
            nn.init.zeros_(self.summary.weight)
            nn.init.zeros_(self.summary.bias)
            frames = 96
            t = torch.arange(frames, dtype=torch.float32)[:, None]          # (96, 1)
            k = torch.arange(1, SUMMARY_RATES + 1, dtype=torch.float32)[None]  # (1, R)
            angle = 2 * math.pi * t * k / frames
            self.register_buffer("dft_cos", torch.cos(angle), persistent=False)  # (96, R)
            self.register_buffer("dft_sin", torch.sin(angle), persistent=False)

    def summarise(self, logmel: Tensor) -> Tensor:
        """(N, 1, 96, 64) log-mel -> (N, 64 + 24): standardised band profile, then the
        normalised modulation spectrum of the loudness envelope."""
        x = logmel.float().mean(1)  # (N, 96, 64) time x mel
        profile = x.mean(1)  # (N, 64)
        profile = (profile - profile.mean(1, keepdim=True)) / (
            profile.std(1, keepdim=True) + 1e-3)
        env = x.mean(2)  # (N, 96)
        env = env - env.mean(1, keepdim=True)
        cos, sin = self.get_buffer("dft_cos"), self.get_buffer("dft_sin")  # (96, R)
        mag = torch.sqrt((env @ cos) ** 2 + (env @ sin) ** 2 + 1e-8)  # (N, R)
        mag = mag / (mag.sum(1, keepdim=True) + 1e-6)
        return torch.cat([profile, mag], 1)

    def forward(self, logmel: Tensor) -> Tensor:
        assert logmel.dim() == 4, f"expected (N, C, H, W) log-mel, got {tuple(logmel.shape)}"
        x = self.blocks(logmel)  # (N, widths[-1], H / 2^k, W / 2^k)
        x = self.pool(x).flatten(1)  # (N, widths[-1])
        if self.summary is None:
            return self.head(x)  # (N, out_dim)
        y = self.head[0](x) + self.summary(self.summarise(logmel).to(x.dtype))
        return self.head[1](y)  # (N, out_dim)
