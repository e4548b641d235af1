"""AVSBench datasets (S4, MS3, AVSS) read from the official on-disk layout, one item format.

The layout, the loaders these mirror and their traps are in docs/AVSBENCH.md; section numbers
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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .media import (
    DataError,
    DataNotFoundError,
    column,
    count_files,
    decode_color_mask,
    read_binary_mask,
    read_csv,
    read_frames,
    read_json,
    read_logmel_pickle,
    read_rgb,
    require_dir,
    split_rows,
    voc_palette,
    wav_log_mel,
)
from .transforms import ClipAugment, Geometry, crop_resize, fit_examples, normalize
from .transforms import resize_square as _resize_square

TASKS = ("s4", "ms3", "avss")
SPLITS = ("train", "val", "test")
AUDIO_SOURCES = ("wav", "pkl")
AVSS_NUM_CLASSES = 71  # 70 sound classes + background; the official loader asserts it
AVSS_CROP_SIZE = 224
_OBJECT_ROOT_HINT = ("--data-root must be the folder that holds Single-source/ and "
                     "Multi-sources/ (avsbench_data/)")
_AVSS_ROOT_HINT = ("the AVSS root must be the folder that holds metadata.csv, label2idx.json "
                   "and v1s/, v1m/, v2/")
# subset -> (vid_temporal_mask_flag, gt_temporal_mask_flag), section 3
_AVSS_FLAGS = {
    "v1s": ([1.0] * 5 + [0.0] * 5, [1.0] + [0.0] * 9),
    "v1m": ([1.0] * 5 + [0.0] * 5, [1.0] * 5 + [0.0] * 5),
    "v2": ([1.0] * 10, [1.0] * 10),
}

class AVSItem(TypedDict):
    """One clip; see the module docstring for shapes and meanings."""

    frames: Tensor
    audio: Tensor
    masks: Tensor
    mask_valid: Tensor
    frame_mask: Tensor
    name: str
    category: str


def _check_options(split: str, audio_source: str, image_size: int | None, augment: bool,
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


def _square(size: int) -> Geometry:
    return lambda img, is_mask: _resize_square(img, size, is_mask)


# ---------------------------------------------------------------------------------------------
# S4 and MS3: binary masks, 5 frames
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clip:
    """One S4/MS3 video with every path resolved."""

    name: str
    category: str
    frames: tuple[Path, ...]  # 5 frame files
    masks: tuple[Path | None, ...]  # per frame; None: no ground truth (S4 train frames 2..5)
    audio: Path  # the wav or the pkl, per audio_source


class _BinaryDataset(Dataset[AVSItem]):
    """Shared S4/MS3 loading; subclasses list the clips of a split in ``_index``."""

    num_frames = 5
    num_classes = 1  # one foreground logit

    def __init__(self, root: str | os.PathLike[str], split: str, *, audio_source: str = "wav",
                 image_size: int | None = None, augment: bool = False,
                 max_items: int | None = None) -> None:
        _check_options(split, audio_source, image_size, augment, max_items)
        self.root, self.split, self.audio_source = Path(root), split, audio_source
        self.image_size, self.augment = image_size, ClipAugment() if augment else None
        self.clips = self._index()[:max_items]

    def _index(self) -> list[_Clip]:
        raise NotImplementedError

    @property
    def _audio_folder(self) -> str:
        return "audio_wav" if self.audio_source == "wav" else "audio_log_mel"

    def _audio_path(self, data: Path, *parts: str) -> Path:
        """``<data>/audio_wav|audio_log_mel/<split>/<parts...>.wav|.pkl``."""
        suffix = ".wav" if self.audio_source == "wav" else ".pkl"
        return data.joinpath(self._audio_folder, self.split, *parts[:-1], parts[-1] + suffix)

    def _require_layout(self, layout: str, folders: list[Path]) -> None:
        """Each folder must exist; the message names it and the expected layout."""
        for folder in folders:
            hint = f"expected the layout {layout}"
            if folder.name == self.split and folder.parent.name == self._audio_folder:
                other = "pkl" if self.audio_source == "wav" else "wav"
                hint += f" (audio_source={self.audio_source!r}; or try audio_source={other!r})"
            require_dir(folder, hint)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> AVSItem:
        clip = self.clips[index]
        T = self.num_frames
        geometry = None if self.image_size is None else _square(self.image_size)
        frames = read_frames(list(clip.frames), geometry)  # (T, 3, H, W) in [0, 1]
        H, W = frames.shape[-2:]
        # Masks of the labelled frames, decoded 0/255 -> 0/1
        labelled = [t for t, p in enumerate(clip.masks) if p is not None]
        real = []
        for t in labelled:
            path = clip.masks[t]
            assert path is not None
            mask = Image.fromarray(read_binary_mask(path))  # (H, W) uint8 0/1
            if geometry is not None:
                mask = geometry(mask, True)
            if mask.size != (W, H):
                raise DataError(f"{path}: mask size {mask.size} (w, h) differs from its frame "
                                f"{clip.frames[t]} {(W, H)}")
            real.append(torch.from_numpy(np.array(mask)).to(torch.float32)[None])  # (1, H, W)
        real_masks = torch.stack(real)  # (m, 1, H, W)
        if self.augment is not None:
            frames, real_masks = self.augment(frames, real_masks)
        masks = frames.new_zeros((T, 1, H, W))
        masks[labelled] = real_masks
        mask_valid = torch.zeros(T)
        mask_valid[labelled] = 1.0
        # Audio: 5 examples, the last repeated if the clip is short (preprocess fix-up)
        if self.audio_source == "wav":
            audio = fit_examples(wav_log_mel(clip.audio), T, pad="repeat")
        else:
            audio = fit_examples(read_logmel_pickle(clip.audio), T, pad="repeat")
        return AVSItem(frames=normalize(frames), audio=audio, masks=masks, mask_valid=mask_valid,
                       frame_mask=torch.ones(T), name=clip.name, category=clip.category)


def _object_csv(root: Path, folder: str, csv_name: str) -> Path:
    """The S4/MS3 meta CSV, with a hint when root is one level off."""
    path = root / folder / csv_name
    if not path.is_file():
        hint = _OBJECT_ROOT_HINT
        if (root / csv_name).is_file():
            hint += f"; {root} looks like {folder}/ itself, pass its parent"
        raise DataNotFoundError(f"expected {path}; {hint}")
    return path


class S4Dataset(_BinaryDataset):
    """AVSBench-object single-source (S4), section 1: 5 frames, masks per ``mask_valid``.

    Train videos have only the first frame's mask (``<name>_1.png``); frames 2..5 get zero
    masks and ``mask_valid = [1, 0, 0, 0, 0]``. Rows come in CSV order, filtered by split.

    Args:
        root: ``avsbench_data/``, the folder that holds ``Single-source/``.
        split: "train", "val" or "test".
        audio_source: "wav" (default; ``s4_data/audio_wav`` through ``pcmanet.audio.log_mel``)
            or "pkl" (``s4_data/audio_log_mel``; pickles run code on load: trusted data only).
        image_size: None keeps the file size (the official behaviour); an int resizes frames
            (bilinear) and masks (nearest) to (image_size, image_size).
        augment: random flip, scale-crop and colour jitter (train only), see ``ClipAugment``.
        max_items: keep only the first max_items videos of the split (quick runs).
    """

    def _index(self) -> list[_Clip]:
        csv_path = _object_csv(self.root, "Single-source", "s4_meta_data.csv")
        data = require_dir(self.root / "Single-source" / "s4_data", _OBJECT_ROOT_HINT)
        header, rows = read_csv(csv_path)
        cat_col = column(header, "category", 2, csv_path)
        split_col = column(header, "split", 3, csv_path)
        rows = split_rows(csv_path, rows, split_col, self.split,
                           needed=max(cat_col, split_col) + 1)
        layout = ("s4_data/{visual_frames,gt_masks}/<split>/<category>/<name>/<name>_<k>.png, "
                  "s4_data/{audio_wav,audio_log_mel}/<split>/<category>/<name>.{wav,pkl}")
        self._require_layout(layout, [data / sub / self.split for sub in
                                      ("visual_frames", "gt_masks", self._audio_folder)])
        labelled = 1 if self.split == "train" else 5  # S4 train: first mask only
        clips = []
        for _, row in rows:
            name, cat = row[0], row[cat_col]
            frame_dir = data / "visual_frames" / self.split / cat / name
            mask_dir = data / "gt_masks" / self.split / cat / name
            clips.append(_Clip(
                name=name, category=cat,
                frames=tuple(frame_dir / f"{name}_{k}.png" for k in range(1, 6)),
                masks=tuple(mask_dir / f"{name}_{k}.png" if k <= labelled else None
                            for k in range(1, 6)),
                audio=self._audio_path(data, cat, name)))
        return clips


class MS3Dataset(_BinaryDataset):
    """AVSBench-object multi-sources (MS3), section 2: 5 frames, all 5 labelled in every split.

    Frames live in ``ms3_data/visual_frames/<name>/<name>.mp4_<k>.png`` (no split level);
    masks and audio have a split level but no category. ``category`` is "".

    Args:
        root: ``avsbench_data/``, the folder that holds ``Multi-sources/``.
        split, audio_source, image_size, augment, max_items: as for :class:`S4Dataset`.
    """

    def _index(self) -> list[_Clip]:
        csv_path = _object_csv(self.root, "Multi-sources", "ms3_meta_data.csv")
        data = require_dir(self.root / "Multi-sources" / "ms3_data", _OBJECT_ROOT_HINT)
        header, rows = read_csv(csv_path)
        split_col = column(header, "split", 1, csv_path)
        rows = split_rows(csv_path, rows, split_col, self.split, needed=split_col + 1)
        layout = ("ms3_data/visual_frames/<name>/<name>.mp4_<k>.png (no split level), "
                  "ms3_data/gt_masks/<split>/<name>/<name>_<k>.png, "
                  "ms3_data/{audio_wav,audio_log_mel}/<split>/<name>.{wav,pkl}")
        self._require_layout(layout, [data / "visual_frames", data / "gt_masks" / self.split,
                                      data / self._audio_folder / self.split])
        clips = []
        for _, row in rows:
            name = row[0]
            frame_dir = data / "visual_frames" / name  # no split level
            mask_dir = data / "gt_masks" / self.split / name
            clips.append(_Clip(
                name=name, category="",
                frames=tuple(frame_dir / f"{name}.mp4_{k}.png" for k in range(1, 6)),
                masks=tuple(mask_dir / f"{name}_{k}.png" for k in range(1, 6)),
                audio=self._audio_path(data, name)))
        return clips


# ---------------------------------------------------------------------------------------------
# AVSS: colour masks, 5 or 10 frames padded to 10
# ---------------------------------------------------------------------------------------------


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
                 image_size: int | None = None, augment: bool = False,
                 max_items: int | None = None) -> None:
        _check_options(split, audio_source, image_size, augment, max_items)
        if audio_source != "wav":
            raise ValueError("AVSS has no precomputed .pkl log-mels; use audio_source='wav'")
        self.root, self.split = Path(root), split
        self.image_size = AVSS_CROP_SIZE if image_size is None else image_size
        self.augment = ClipAugment() if augment else None
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


DATASETS: dict[str, type[_BinaryDataset] | type[AVSSDataset]] = {
    "s4": S4Dataset, "ms3": MS3Dataset, "avss": AVSSDataset}


def build_dataset(task: str, root: str | os.PathLike[str], split: str,
                  **options: Any) -> Dataset[AVSItem]:
    """``S4Dataset | MS3Dataset | AVSSDataset(root, split, **options)`` by task name.

    Options: audio_source, image_size, augment, max_items (see :class:`S4Dataset`).

    Raises:
        ValueError: unknown task, split or option value.
        DataError: missing or malformed files (DataNotFoundError for missing ones).
    """
    if task not in DATASETS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return DATASETS[task](root, split, **options)
