"""VGGish audio encoder with the torchvggish (harritaylor v0.1) state_dict layout.

Keys: ``features.{0,3,6,8,11,13}.{weight,bias}`` (3x3 convs) and ``embeddings.{0,2,4}.{weight,
bias}`` (FCs), see ``tests/pcmanet/reference/vggish_keys.tsv``; 72,141,184 parameters.
PCA/whitening and quantisation are off, as in PCMANet/AVSBench: the output is the post-ReLU
embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pcmanet.weights_file import (  # one error type for every weights file
    CheckpointError,
    CheckpointNotFoundError,
    as_state_dict,
    load_exact,
    read_weights_file,
)

# torchvggish conv stack: widths, "M" = 2x2 max-pool with stride 2.
VGGISH_LAYERS: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
VGGISH_OUT_DIM = 128  # embedding width of the released torchvggish weights

__all__ = ["VGGISH_LAYERS", "VGGISH_OUT_DIM", "CheckpointError", "CheckpointNotFoundError",
           "VGGish", "load_vggish"]


def _make_features(layers: Sequence[int | str], in_chans: int) -> nn.Sequential:
    """Conv3x3-ReLU / MaxPool stack; module indices follow torchvggish (conv at 0, 3, 6, 8, ...)."""
    modules: list[nn.Module] = []
    chans = in_chans
    for layer in layers:
        if layer == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(layer, int), f"layer must be an int width or 'M', got {layer!r}"
            modules += [nn.Conv2d(chans, layer, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            chans = layer
    return nn.Sequential(*modules)


class VGGish(nn.Module):
    """VGGish: log-mel examples (N, 1, 96, 64) -> embeddings (N, out_dim), non-negative.

    Args:
        layers: conv widths and "M" pools; the default is torchvggish's.
        hidden_dim: width of the two hidden FC layers.
        out_dim: embedding width (128 for the released weights).
        in_hw: (frames, bands) of one example; each "M" halves both.
    """

    def __init__(
        self,
        layers: Sequence[int | str] = VGGISH_LAYERS,
        hidden_dim: int = 4096,
        out_dim: int = VGGISH_OUT_DIM,
        in_hw: tuple[int, int] = (96, 64),
    ) -> None:
        super().__init__()
        self.in_hw = in_hw
        self.out_dim = out_dim
        self.features = _make_features(layers, in_chans=1)
        widths = [layer for layer in layers if isinstance(layer, int)]
        scale = 2 ** sum(layer == "M" for layer in layers)
        self.grid = (in_hw[0] // scale, in_hw[1] // scale)  # (6, 4) for the default
        flat_dim = widths[-1] * self.grid[0] * self.grid[1]  # 512 * 6 * 4 = 12288
        self.embeddings = nn.Sequential(
            nn.Linear(flat_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, logmel: Tensor) -> Tensor:
        N, _, H, W = logmel.shape
        assert self.in_hw == (H, W), (
            f"expected (N, 1, {self.in_hw[0]}, {self.in_hw[1]}), got {tuple(logmel.shape)}"
        )
        x = self.features(logmel)  # (N, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(N, -1)  # (N, 6 * 4 * 512), TensorFlow (H, W, C) order
        return self.embeddings(x)  # (N, out_dim)

    def freeze(self) -> VGGish:
        """Frozen feature extractor, as in PCMANet: eval mode, no parameter requires grad."""
        self.requires_grad_(False)
        return self.eval()


def load_vggish(path: str | Path, *, freeze: bool = True) -> VGGish:
    """Build VGGish and load a torchvggish state_dict file strictly (torch.load weights_only).

    Args:
        path: local ``.pth`` file, e.g. ``vggish-10086976.pth``.
        freeze: return the model frozen (eval, no grad), as PCMANet uses it.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        CheckpointError: the file cannot be read (truncated, corrupt, not a state_dict) or its
            keys/shapes differ from the model's; the message names the file and the first keys.
    """
    state = as_state_dict(read_weights_file(path), path)
    with torch.device("meta"):  # shapes only: no memory, no random init to overwrite
        model = VGGish()
    state = {k: v.float() for k, v in state.items()}
    load_exact(model, state, path, hint="expected the torchvggish layout", assign=True)
    return model.freeze() if freeze else model
