"""Training order that keeps clips of one scene together.

Our synthetic S4 sets (and the evaluation families) list the clips that share one scene render
(identical frames, another object sounding) next to each other in the meta CSV. With
``train.shuffle_block = k`` the training order shuffles blocks of k consecutive clips instead
of single clips, so a batch holds whole twin pairs: the same frames with two different sounds
and two different masks, a direct lesson that the audio decides which object to paint.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class BlockShuffleSampler(Sampler[int]):
    """Indices 0..n-1 in blocks of ``block`` consecutive ones (the last may be shorter), the
    blocks in a new random order each epoch (drawn from ``generator``)."""

    def __init__(self, n: int, block: int, generator: torch.Generator | None = None) -> None:
        if n < 0 or block < 1:
            raise ValueError(f"need n >= 0 and block >= 1, got n={n}, block={block}")
        self.n, self.block, self.generator = n, block, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        blocks = (self.n + self.block - 1) // self.block
        for b in torch.randperm(blocks, generator=self.generator).tolist():
            yield from range(b * self.block, min((b + 1) * self.block, self.n))
