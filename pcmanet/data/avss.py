"""AVSBench-semantic (AVSS): colour masks of 71 classes, 5 or 10 frames padded to 10.

Layout: docs/avsbench.md section 3; the item format: :mod:`pcmanet.data.avsbench`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .item import AVSItem, check_options
from .media import (
    DataError,
    DataNotFoundError,
    column,
    count_files,
    decode_color_mask,
    read_csv,
    read_frames,
    read_json,
    read_rgb,
    require_dir,
    split_rows,
    voc_palette,
    wav_log_mel,
)
from .transforms import ClipAugment, crop_resize, fit_examples, normalize
from .transforms import resize_square as _resize_square

AVSS_NUM_CLASSES = 71  # 70 sound classes + background; the official loader asserts it
AVSS_CROP_SIZE = 224
_AVSS_ROOT_HINT = ("the AVSS root must be the folder that holds metadata.csv, label2idx.json "
                   "and v1s/, v1m/, v2/")
# subset -> (vid_temporal_mask_flag, gt_temporal_mask_flag), section 3
_AVSS_FLAGS = {
    "v1s": ([1.0] * 5 + [0.0] * 5, [1.0] + [0.0] * 9),
    "v1m": ([1.0] * 5 + [0.0] * 5, [1.0] * 5 + [0.0] * 5),
    "v2": ([1.0] * 10, [1.0] * 10),
}


_FRAME_RE, _LABEL_RE = re.compile(r"\d+\.jpg"), re.compile(r"\d+\.png")


class AVSSDataset(Dataset[AVSItem]):
    """AVSBench-semantic (AVSS), section 3: 71 classes, clips padded to 10 frames.

    ``<root>/<label>/<uid>/frames/<i>.jpg`` (i from 0), ``labels_rgb/<i>.png`` (VOC palette
    colours, exact match, unknown colours -> 0) and ``audio.wav``. Train: short side to
    ``image_size`` then a centre crop; val/test: plain resize. 5-frame (v1s, v1m) clips are
    padded with zero frames, zero labels and zero audio examples to 10; the flags follow the
    official table (``frame_mask`` = vid_temporal_mask_flag, ``mask_valid`` =
    gt_temporal_mask_flag), additionally zeroed past the frames / label files a video has
    (identical for well-formed videos).

    Args:
        root: the AVSS folder holding metadata.csv, label2idx.json and v1s/, v1m/, v2/.
        split: "train", "val" or "test".
        audio_source: only "wav" (AVSS has no precomputed log-mels).
        image_size: output side (default 224, the official CROP_SIZE).
        augment, max_items: as for :class:`S4Dataset`.
    """

    num_frames = 10
    num_classes = AVSS_NUM_CLASSES

    def __init__(self, root: str | os.PathLike[str], split: str, *, audio_source: str = "wav",
                 image_size: int | None = None, augment: bool | ClipAugment = False,
                 max_items: int | None = None, cache: bool = False) -> None:
        check_options(split, audio_source, image_size, bool(augment), max_items)
        if cache:
            raise ValueError("the decoded-clip cache (data.cache) is for S4 and MS3; AVSS "
                             "clips are read from their files each time: set data.cache=false")
        if audio_source != "wav":
            raise ValueError("AVSS has no precomputed .pkl log-mels; use audio_source='wav'")
        self.root, self.split = Path(root), split
        self.image_size = AVSS_CROP_SIZE if image_size is None else image_size
        self.augment = ClipAugment.from_option(augment)
        csv_path = self.root / "metadata.csv"
        if not csv_path.is_file():
            raise DataNotFoundError(f"expected {csv_path}; {_AVSS_ROOT_HINT}")
        json_path = self.root / "label2idx.json"
        labels = read_json(json_path, _AVSS_ROOT_HINT)
        if not isinstance(labels, dict) or len(labels) != AVSS_NUM_CLASSES:
            size = len(labels) if isinstance(labels, dict | list) else type(labels).__name__
            raise DataError(f"{json_path}: expected a JSON object of {AVSS_NUM_CLASSES} "
                            f"class names -> ids, got {size}")
        self.class_names = list(labels)  # the file's order; the loader only uses the count
        self.palette = voc_palette(AVSS_NUM_CLASSES)  # (71, 3) uint8
        header, rows = read_csv(csv_path)
        cols = [column(header, c, None, csv_path) for c in ("uid", "label", "split")]
        rows = split_rows(csv_path, rows, cols[2], split, needed=max(cols) + 1)
        self.videos = [(row[cols[0]], row[cols[1]]) for _, row in rows][:max_items]
        for line, row in rows:
            if row[cols[1]] not in _AVSS_FLAGS:
                raise DataError(f"{csv_path}, line {line}: unknown subset label "
                                f"{row[cols[1]]!r}; expected one of {', '.join(_AVSS_FLAGS)}")
        for label in sorted({label for _, label in self.videos}):
            require_dir(self.root / label, _AVSS_ROOT_HINT)

    def __len__(self) -> int:
        return len(self.videos)

    def _geometry(self, img: Image.Image, is_mask: bool) -> Image.Image:
        if self.split == "train":
            return crop_resize(img, self.image_size, is_mask)
        return _resize_square(img, self.image_size, is_mask)

    def __getitem__(self, index: int) -> AVSItem:
        uid, label = self.videos[index]
        base = self.root / label / uid
        T = self.num_frames
        n = count_files(base / "frames", _FRAME_RE)
        m = count_files(base / "labels_rgb", _LABEL_RE)
        if not 0 < n <= T:
            raise DataError(f"{base / 'frames'}: {n} frames named <i>.jpg, expected 1..{T} "
                            "(0.jpg, 1.jpg, ...)")
        if m > n:
            raise DataError(f"{base / 'labels_rgb'}: {m} label files for {n} frames")
        frames = read_frames([base / "frames" / f"{i}.jpg" for i in range(n)], self._geometry)
        labels = []
        for i in range(m):
            path = base / "labels_rgb" / f"{i}.png"
            rgb = np.array(self._geometry(read_rgb(path), True))  # (S, S, 3) uint8
            labels.append(torch.from_numpy(decode_color_mask(rgb, self.palette)))
        S = self.image_size
        real = torch.stack(labels) if labels else torch.zeros((0, S, S), dtype=torch.int64)
        if self.augment is not None:
            frames, real = self.augment(frames, real)
        padded = torch.zeros((T, 3, S, S))  # zeros after normalisation, as the official code
        padded[:n] = normalize(frames)
        masks = torch.zeros((T, S, S), dtype=torch.int64)
        masks[:m] = real
        vid_flag, gt_flag = (torch.tensor(f) for f in _AVSS_FLAGS[label])
        steps = torch.arange(T)
        audio = fit_examples(wav_log_mel(base / "audio.wav"), T, pad="zeros")
        return AVSItem(frames=padded, audio=audio, masks=masks,
                       mask_valid=gt_flag * (steps < m), frame_mask=vid_flag * (steps < n),
                       name=uid, category=label)
