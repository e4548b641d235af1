"""Data sets: AVSBench (S4, MS3, AVSS) from the official on-disk layout."""

from __future__ import annotations

from .avsbench import (
    AUDIO_SOURCES,
    AVSS_NUM_CLASSES,
    DATASETS,
    SPLITS,
    TASKS,
    AVSItem,
    AVSSDataset,
    MS3Dataset,
    S4Dataset,
    build_dataset,
)
from .media import DataError, DataNotFoundError, voc_palette
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ClipAugment

__all__ = [
    "AUDIO_SOURCES",
    "AVSS_NUM_CLASSES",
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPLITS",
    "TASKS",
    "AVSItem",
    "AVSSDataset",
    "ClipAugment",
    "DataError",
    "DataNotFoundError",
    "MS3Dataset",
    "S4Dataset",
    "build_dataset",
    "voc_palette",
]
