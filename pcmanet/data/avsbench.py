"""AVSBench datasets (S4, MS3, AVSS) read from the official on-disk layout, one item format.

The layout, the loaders these mirror and their traps are in docs/avsbench.md; section numbers
below refer to it. Roots:

* S4 / MS3: ``root`` is ``avsbench_data/``, the folder that holds ``Single-source/`` and
  ``Multi-sources/``.
* AVSS: ``root`` is the AVSS folder that holds ``metadata.csv``, ``label2idx.json`` and
  ``v1s/``, ``v1m/``, ``v2/``.

Item format (a dict, the same keys for every task, so one training loop serves all; the
default ``torch.utils.data.default_collate`` batches it, adding a leading B and turning the
strings into lists of str). T = 5 for S4/MS3, 10 for AVSS:

============  ===================================  ==========================================
key           shape, dtype                         meaning
============  ===================================  ==========================================
frames        (T, 3, H, W) float32                 RGB, ``ToTensor`` then ImageNet
                                                   ``Normalize``; AVSS padding frames are 0
audio         (T, 1, 96, 64) float32               VGGish log-mel examples, example k pairs
                                                   with frame k (section 4)
masks         S4/MS3 (T, 1, H, W) float32 0/1      binary ground truth; frames without a label
              AVSS (T, H, W) int64 class ids       are 0 (S4 train frames 2..5, AVSS padding)
mask_valid    (T,) float32                         1 where the label counts in the loss: S4
                                                   train 1,0,0,0,0; S4 val/test and MS3 all 1;
                                                   AVSS ``gt_temporal_mask_flag``
frame_mask    (T,) float32                         1 for real frames, 0 for padding: all 1 for
                                                   S4/MS3, AVSS ``vid_temporal_mask_flag``
name          str                                  video name (S4/MS3) or uid (AVSS)
category      str                                  S4 category, "" for MS3, AVSS subset label
============  ===================================  ==========================================

H, W: the file size for S4/MS3 (224 for the released data; the official loaders do not
resize) unless ``image_size`` is set; ``image_size`` (default 224) for AVSS.

The official AVSS *loss* uses ``gt_temporal_mask_flag`` (here ``mask_valid``) and multiplies
the audio features by ``vid_temporal_mask_flag`` (here ``frame_mask``); the official AVSS
*metric* scores all 10 frames, padding included (label 0). Audio comes from the wav files by
default; ``audio_source="pkl"`` reads the precomputed S4/MS3 pickles, which can run code when
loaded: use it only on the trusted official release.
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from .avs_object import MS3Dataset, ObjectDataset, S4Dataset
from .avss import AVSS_CROP_SIZE, AVSS_NUM_CLASSES, AVSSDataset
from .item import AUDIO_SOURCES, SPLITS, TASKS, AVSItem

__all__ = ["AUDIO_SOURCES", "AVSS_CROP_SIZE", "AVSS_NUM_CLASSES", "DATASETS", "SPLITS", "TASKS",
           "AVSItem", "AVSSDataset", "MS3Dataset", "S4Dataset", "build_dataset"]

DATASETS: dict[str, type[ObjectDataset] | type[AVSSDataset]] = {
    "s4": S4Dataset, "ms3": MS3Dataset, "avss": AVSSDataset}


def build_dataset(task: str, root: str | os.PathLike[str], split: str,
                  **options: Any) -> Dataset[AVSItem]:
    """``S4Dataset | MS3Dataset | AVSSDataset(root, split, **options)`` by task name.

    Options: audio_source, image_size, augment, max_items, cache (see :class:`S4Dataset`).

    Raises:
        ValueError: unknown task, split or option value.
        DataError: missing or malformed files (DataNotFoundError for missing ones).
    """
    if task not in DATASETS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return DATASETS[task](root, split, **options)
