"""Object paste: a training clip gets objects cut out of other clips of its set (copy-paste).

In an S4 set a clip's mask covers the object its sound names. An object cut out of another clip
of another category is silent in this clip's sound: pasted in, it is a distractor and covers
what lay under it. An object cut out of a clip of the same category is another object of the
sounding kind: it joins the target. With objects pasted at random places and sizes over random
scenes, the answer can no longer be read off the scene (which of 75 training scenes this is);
it has to come from what the sound names and what the objects look like. On 150-clip sets of
sound families the model otherwise learns each training scene's answer and stays flat on
validation after a third of the run (docs/training.md, "Why the run plateaus").

Shapes: frames (T, 3, H, W) float in [0, 1], labelled masks (m, 1, H, W) float 0/1, a donor's
frame (3, H', W') and mask (1, H', W') (resized to (H, W) when they differ). One object is drawn
over every frame of the clip at the same place (S4 training clips label only their first
frame, so a donor's other frames have no mask to cut with).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .transforms import random_hue

MIN_OBJECT_PIXELS = 16  # a donor mask smaller than this (a sliver at the border) is skipped


@dataclass(frozen=True)
class Donor:
    """One object to paste: ``frame`` (3, H, W) float in [0, 1], ``mask`` (1, H, W) float 0/1
    (the donor clip's first labelled frame and its mask), ``same``: the donor's category is
    the clip's own (the object joins the target) or not (a distractor)."""

    frame: Tensor
    mask: Tensor
    same: bool


@dataclass(frozen=True)
class ObjectPaste:
    """Copy-paste of labelled objects between the training clips of one S4 split.

    Random numbers come from torch's global RNG (seeded per DataLoader worker, as
    :class:`~pcmanet.data.transforms.ClipAugment`), a fixed number of draws per call so that
    RNG use does not depend on outcomes.

    Args:
        prob: chance that a clip gets pasted objects at all.
        max_objects: 1..max_objects objects per pasted clip, uniformly.
        scale_min, scale_max: each object's size factor, uniform in [scale_min, scale_max]
            (clipped to the frame).
        hue_p: chance that an object's hue is rotated by a random amount (its own, not the
            clip's), for sets whose colours name nothing; 0 draws no extra random numbers.
        same_p: chance that a donor is drawn from the clip's own category (another object of
            the sounding kind, at a new place, size and colour: it joins the target) rather
            than from all other clips; 0 draws no extra random numbers.
    """

    prob: float = 0.5
    max_objects: int = 2
    scale_min: float = 0.7
    scale_max: float = 1.3
    hue_p: float = 0.0
    same_p: float = 0.0

    def __post_init__(self) -> None:
        if not all(0.0 <= p <= 1.0 for p in (self.prob, self.hue_p, self.same_p)):
            raise ValueError(f"paste prob, hue_p and same_p must be in [0, 1], got "
                             f"{self.prob!r}, {self.hue_p!r}, {self.same_p!r}")
        if self.max_objects < 1:
            raise ValueError(f"paste max_objects must be >= 1, got {self.max_objects!r}")
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ValueError(f"paste scales must satisfy 0 < scale_min <= scale_max, got "
                             f"{self.scale_min!r}, {self.scale_max!r}")

    def donors(self, index: int, n: int, same: Sequence[int] = ()) -> list[int]:
        """Indices of the clips whose objects clip ``index`` of ``n`` gets (never itself);
        empty when this clip gets none. ``same``: the other clips of its category, drawn from
        with chance :attr:`same_p` per donor (when there are any)."""
        u = torch.rand(2).tolist()
        picks = torch.randint(0, max(n - 1, 1), (self.max_objects,)).tolist()
        if self.same_p > 0:
            own = torch.rand(self.max_objects).tolist()
            own_picks = torch.randint(0, max(len(same), 1), (self.max_objects,)).tolist()
        if n < 2 or u[0] >= self.prob:
            return []
        count = 1 + min(int(u[1] * self.max_objects), self.max_objects - 1)
        out = [p + int(p >= index) for p in picks[:count]]
        if self.same_p > 0 and same:
            out = [same[own_picks[k]] if own[k] < self.same_p else j for k, j in enumerate(out)]
        return out

    def __call__(self, frames: Tensor, masks: Tensor,
                 donors: Sequence[Donor]) -> tuple[Tensor, Tensor]:
        """frames (T, 3, H, W), masks (m, 1, H, W) -> the same shapes, each donor's object
        drawn over every frame; masks lose the covered pixels and, for a donor of the same
        category, gain the object's."""
        for donor in donors:
            frames, masks = self._paste(frames, masks, donor)
        return frames, masks

    def _paste(self, frames: Tensor, masks: Tensor, donor: Donor) -> tuple[Tensor, Tensor]:
        H, W = frames.shape[-2:]
        u = torch.rand(4).tolist()
        image, cut = donor.frame, donor.mask
        if image.shape[-2:] != (H, W):
            image = F.interpolate(image[None], size=(H, W), mode="bilinear",
                                  align_corners=False)[0]
            cut = F.interpolate(cut[None], size=(H, W), mode="nearest")[0]
        ys, xs = cut[0].nonzero(as_tuple=True)
        if len(ys) < MIN_OBJECT_PIXELS:
            return frames, masks
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        patch, alpha = image[:, y0:y1, x0:x1], cut[:, y0:y1, x0:x1]      # (3, h, w), (1, h, w)
        if u[0] < 0.5:
            patch, alpha = patch.flip(-1), alpha.flip(-1)
        scale = self.scale_min + (self.scale_max - self.scale_min) * u[1]
        h = min(max(round(scale * (y1 - y0)), 1), H)
        w = min(max(round(scale * (x1 - x0)), 1), W)
        patch = F.interpolate(patch[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        if self.hue_p > 0:
            patch = random_hue(patch.clamp(0.0, 1.0), self.hue_p)
        # soft edge for the pixels (as a rendered object's), the binary mask at its half level
        soft = F.interpolate(alpha[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        top, left = min(int(u[2] * (H - h + 1)), H - h), min(int(u[3] * (W - w + 1)), W - w)
        weight = frames.new_zeros((1, H, W))
        weight[:, top:top + h, left:left + w] = soft.clamp(0.0, 1.0)
        colour = frames.new_zeros((3, H, W))
        colour[:, top:top + h, left:left + w] = patch
        frames = frames * (1.0 - weight) + colour * weight                 # every frame
        covered = (weight > 0.5).to(masks.dtype)                           # (1, H, W)
        masks = masks * (1.0 - covered)
        if donor.same:
            masks = torch.maximum(masks, covered)
        return frames, masks
