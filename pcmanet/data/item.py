"""The one item format of every AVSBench data set, and the option checks they share.

See :mod:`pcmanet.data.avsbench` for the item's keys, shapes and meanings.
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor

from .transforms import Geometry
from .transforms import resize_square as _resize_square

TASKS = ("s4", "ms3", "avss")
SPLITS = ("train", "val", "test")
AUDIO_SOURCES = ("wav", "pkl")


class AVSItem(TypedDict):
    """One clip; see the module docstring for shapes and meanings."""

    frames: Tensor
    audio: Tensor
    masks: Tensor
    mask_valid: Tensor
    frame_mask: Tensor
    name: str
    category: str


def check_options(split: str, audio_source: str, image_size: int | None, augment: bool,
                   max_items: int | None) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if audio_source not in AUDIO_SOURCES:
        raise ValueError(f"unknown audio_source {audio_source!r}; valid: "
                         f"{', '.join(AUDIO_SOURCES)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size <= 0):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if augment and split != "train":
        raise ValueError(f"augment=True is for the train split only, got split={split!r}")
    if max_items is not None and max_items <= 0:
        raise ValueError(f"max_items must be positive or None, got {max_items!r}")


def square_geometry(size: int) -> Geometry:
    return lambda img, is_mask: _resize_square(img, size, is_mask)
