"""Frame/mask geometry, ImageNet normalisation, example padding and clip augmentation.

Resizing happens on PIL images, as in the official AVSS loader (``Image.resize`` with BILINEAR
for frames, NEAREST for masks); augmentation happens on tensors in [0, 1], before the
normalisation, with one set of random parameters per clip so that every frame and every mask
of the clip moves together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Geometry = Callable[[Image.Image, bool], Image.Image]  # (image, is_mask) -> image


def resize_square(img: Image.Image, size: int, is_mask: bool = False) -> Image.Image:
    """Plain resize to (size, size), aspect not kept (official AVSS val/test ``resize_img``)."""
    return img.resize((size, size), Image.Resampling.NEAREST if is_mask
                      else Image.Resampling.BILINEAR)


def crop_resize(img: Image.Image, size: int, is_mask: bool = False) -> Image.Image:
    """Short side to ``size`` then a centred (size, size) crop (official AVSS ``crop_resize_img``).

    Integer arithmetic exactly as the official code: ``ow = int(w * size / h)`` when w > h, and
    the crop origin ``int(round((w' - size) / 2))`` (= ``round``) (Python's round, half to even).
    """
    w, h = img.size
    if w > h:
        oh, ow = size, int(1.0 * w * size / h)
    else:
        ow, oh = size, int(1.0 * h * size / w)
    img = img.resize((ow, oh), Image.Resampling.NEAREST if is_mask else Image.Resampling.BILINEAR)
    w, h = img.size
    x1, y1 = round((w - size) / 2.0), round((h - size) / 2.0)
    return img.crop((x1, y1, x1 + size, y1 + size))


def image_to_tensor(img: Image.Image) -> Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1], bit-identical to torchvision's ``ToTensor``."""
    array = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32).div(255)


def normalize(frames: Tensor) -> Tensor:
    """ImageNet ``Normalize`` of (..., 3, H, W) float in [0, 1] (torchvision's float32 ops)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=frames.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=frames.dtype).view(3, 1, 1)
    return frames.sub(mean).div(std)


def fit_examples(examples: Tensor, num: int, pad: str) -> Tensor:
    """Pad or cut log-mel examples (N, 1, 96, 64) to exactly (num, 1, 96, 64).

    pad: "repeat" repeats the last example (the S4/MS3 preprocessing fix-up), "zeros" appends
    zero examples (the AVSS VGGish wrapper). Extra examples are cut off in both cases.
    """
    n = examples.shape[0]
    if n >= num:
        return examples[:num]
    if pad == "repeat":
        filler = examples[-1:].expand(num - n, *examples.shape[1:])
    elif pad == "zeros":
        filler = examples.new_zeros((num - n, *examples.shape[1:]))
    else:
        raise ValueError(f"pad must be 'repeat' or 'zeros', got {pad!r}")
    return torch.cat([examples, filler], dim=0)


@dataclass(frozen=True)
class ClipAugment:
    """Training augmentation of one clip, drawn from torch's global RNG (one draw per clip).

    frames (n, 3, H, W) float in [0, 1] and masks (m, 1, H, W) float or (m, H, W) int64 ->
    the same shapes. Geometry is shared by all frames and masks of the clip: horizontal flip
    with probability ``flip_p``, then a random crop of ``scale`` in [scale_min, 1] of each side,
    resized back to (H, W) (frames bilinear, masks nearest). Colour jitter (frames only): factors
    drawn from [1 - x, 1 + x] for brightness, contrast and saturation, applied in that order;
    then, with probability ``hue_p``, a hue rotation by a uniform random fraction of the circle
    (for sets whose colours name nothing; 0, the default, draws no extra random numbers).

    Seeding: ``torch.manual_seed`` in the main process; DataLoader workers seed torch per worker
    from the loader's ``generator``, so a seeded loader gives the same augmentations each run.
    """

    flip_p: float = 0.5
    scale_min: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue_p: float = 0.0

    @classmethod
    def from_option(cls, augment: bool | ClipAugment) -> ClipAugment | None:
        """A data set's ``augment`` argument -> the augmentation: True gives the defaults,
        False none, a ``ClipAugment`` itself."""
        if isinstance(augment, ClipAugment):
            return augment
        return cls() if augment else None

    def __call__(self, frames: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        H, W = frames.shape[-2:]
        assert masks.shape[-2:] == (H, W), f"masks {tuple(masks.shape)} vs frames {(H, W)}"
        u = torch.rand(7).tolist()  # always 7 draws, so RNG use does not depend on outcomes
        # Geometry: flip, then crop and resize back
        if u[0] < self.flip_p:
            frames, masks = frames.flip(-1), masks.flip(-1)
        scale = self.scale_min + (1.0 - self.scale_min) * u[1]
        h, w = max(1, round(scale * H)), max(1, round(scale * W))
        top, left = min(int(u[2] * (H - h + 1)), H - h), min(int(u[3] * (W - w + 1)), W - w)
        if (h, w) != (H, W):
            crop = frames[..., top : top + h, left : left + w]
            frames = F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False)
            masks = _resize_mask(masks[..., top : top + h, left : left + w], (H, W))
        # Colour: brightness, contrast, saturation
        jitter = [1.0 + s * (2.0 * v - 1.0) for s, v in
                  zip((self.brightness, self.contrast, self.saturation), u[4:])]
        frames = TF.adjust_brightness(frames, jitter[0])
        frames = TF.adjust_contrast(frames, jitter[1])
        frames = TF.adjust_saturation(frames, jitter[2])
        if self.hue_p > 0:
            frames = random_hue(frames, self.hue_p)
        return frames.contiguous(), masks.contiguous()


def random_hue(image: Tensor, p: float) -> Tensor:
    """(..., 3, H, W) in [0, 1] -> the same, with probability p hue-rotated by a uniform random
    fraction of the circle (two draws from torch's RNG either way)."""
    u = torch.rand(2).tolist()
    return TF.adjust_hue(image, u[1] - 0.5) if u[0] < p else image


def _resize_mask(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest resize of (m, 1, h, w) float or (m, h, w) integer masks to ``size``."""
    if masks.shape[0] == 0:  # a clip without labels
        return masks.new_zeros((*masks.shape[:-2], *size))
    if masks.dim() == 3:  # (m, h, w) class ids
        out = F.interpolate(masks[:, None].to(torch.float32), size=size, mode="nearest")
        return out[:, 0].to(masks.dtype)  # (m, H, W)
    return F.interpolate(masks, size=size, mode="nearest")  # (m, 1, H, W)
