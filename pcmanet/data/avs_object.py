"""AVSBench-object data sets: S4 (single source) and MS3 (multi-sources), binary masks, 5 frames.

Layouts: docs/avsbench.md sections 1-2 and 4; the item format: :mod:`pcmanet.data.avsbench`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .item import AVSItem, check_options, square_geometry
from .media import (
    DataError,
    DataNotFoundError,
    column,
    read_binary_mask,
    read_csv,
    read_frames,
    read_logmel_pickle,
    require_dir,
    split_rows,
    wav_log_mel,
)
from .paste import Donor, ObjectPaste
from .transforms import ClipAugment, fit_examples, normalize

_OBJECT_ROOT_HINT = ("--data-root must be the folder that holds Single-source/ and "
                     "Multi-sources/ (avsbench_data/)")


@dataclass(frozen=True)
class _Clip:
    """One S4/MS3 video with every path resolved."""

    name: str
    category: str
    frames: tuple[Path, ...]  # 5 frame files
    masks: tuple[Path | None, ...]  # per frame; None: no ground truth (S4 train frames 2..5)
    audio: Path  # the wav or the pkl, per audio_source


class ObjectDataset(Dataset[AVSItem]):
    """Shared S4/MS3 loading; subclasses list the clips of a split in ``_index``."""

    num_frames = 5
    num_classes = 1  # one foreground logit

    def __init__(self, root: str | os.PathLike[str], split: str, *, audio_source: str = "wav",
                 image_size: int | None = None, augment: bool | ClipAugment = False,
                 max_items: int | None = None, cache: bool = False,
                 paste: ObjectPaste | None = None) -> None:
        check_options(split, audio_source, image_size, bool(augment), max_items)
        if paste is not None and split != "train":
            raise ValueError(f"paste is for the train split only, got split={split!r}")
        self.root, self.split, self.audio_source = Path(root), split, audio_source
        self.image_size = image_size
        self.augment = ClipAugment.from_option(augment)
        self.clips = self._index()[:max_items]
        if paste is not None and any(not c.category for c in self.clips):
            raise ValueError("paste needs a category per clip (S4); this set has clips without "
                             "one (MS3 has none): leave paste off for it")
        self.paste = paste
        self._by_category: dict[str, list[int]] = {}
        for i, c in enumerate(self.clips):
            self._by_category.setdefault(c.category or "", []).append(i)
        # index -> (frames (T, 3, H, W) uint8, labelled masks (m, 1, H, W) uint8, audio);
        # filled on first read, in the process that reads (a DataLoader worker keeps its own)
        self._cache: dict[int, tuple[Tensor, Tensor, Tensor]] | None = {} if cache else None

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

    def _decode(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """Clip ``index`` from its files -> (frames (T, 3, H, W) float32 in [0, 1], labelled
        masks (m, 1, H, W) float32 0/1, audio (T, 1, 96, 64) float32)."""
        clip = self.clips[index]
        geometry = None if self.image_size is None else square_geometry(self.image_size)
        frames = read_frames(list(clip.frames), geometry)  # (T, 3, H, W) in [0, 1]
        H, W = frames.shape[-2:]
        real = []  # masks of the labelled frames, decoded 0/255 -> 0/1
        for t, path in enumerate(clip.masks):
            if path is None:
                continue
            mask = Image.fromarray(read_binary_mask(path))  # (H, W) uint8 0/1
            if geometry is not None:
                mask = geometry(mask, True)
            if mask.size != (W, H):
                raise DataError(f"{path}: mask size {mask.size} (w, h) differs from its frame "
                                f"{clip.frames[t]} {(W, H)}")
            real.append(torch.from_numpy(np.array(mask)).to(torch.float32)[None])  # (1, H, W)
        # Audio: 5 examples, the last repeated if the clip is short (preprocess fix-up)
        if self.audio_source == "wav":
            audio = fit_examples(wav_log_mel(clip.audio), self.num_frames, pad="repeat")
        else:
            audio = fit_examples(read_logmel_pickle(clip.audio), self.num_frames, pad="repeat")
        return frames, torch.stack(real), audio

    def _read(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`_decode`, through the cache when it is on. The cache keeps frames and masks
        as uint8 (4x smaller); ``u8 / 255`` gives back exactly the float32 values decoded."""
        if self._cache is None:
            return self._decode(index)
        hit = self._cache.get(index)
        if hit is None:
            frames, masks, audio = self._decode(index)
            hit = ((frames * 255).round().to(torch.uint8), masks.to(torch.uint8), audio)
            self._cache[index] = hit
        frames_u8, masks_u8, audio = hit
        return frames_u8.to(torch.float32).div(255), masks_u8.to(torch.float32), audio.clone()

    def _donors(self, index: int) -> list[Donor]:
        """The objects :attr:`paste` draws for clip ``index``: each donor clip's first labelled
        frame and mask (a donor without a labelled frame gives none)."""
        assert self.paste is not None
        donors = []
        category = self.clips[index].category
        same = [j for j in self._by_category.get(category, []) if j != index] \
            if self.paste.same_p > 0 else []
        for j in self.paste.donors(index, len(self.clips), same):
            first = next((t for t, p in enumerate(self.clips[j].masks) if p is not None), None)
            if first is None:
                continue
            frames, masks, _ = self._read(j)
            donors.append(Donor(frame=frames[first], mask=masks[0],
                                same=self.clips[j].category == self.clips[index].category))
        return donors

    def __getitem__(self, index: int) -> AVSItem:
        clip = self.clips[index]
        T = self.num_frames
        frames, real_masks, audio = self._read(index)
        H, W = frames.shape[-2:]
        labelled = [t for t, p in enumerate(clip.masks) if p is not None]
        if self.paste is not None:
            frames, real_masks = self.paste(frames, real_masks, self._donors(index))
        if self.augment is not None:
            frames, real_masks = self.augment(frames, real_masks)
        masks = frames.new_zeros((T, 1, H, W))
        masks[labelled] = real_masks
        mask_valid = torch.zeros(T)
        mask_valid[labelled] = 1.0
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


class S4Dataset(ObjectDataset):
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
        augment: random flip, scale-crop and colour jitter (train only), see ``ClipAugment``
            (True: its defaults; or a ``ClipAugment`` with other settings).
        max_items: keep only the first max_items videos of the split (quick runs).
        cache: keep each clip's decoded frames (uint8, after resizing), masks and log-mel in
            memory after its first read; augmentation still draws anew per read. About
            T * 3 * H * W bytes per clip: 150 clips at 128 px take 37 MB, AVSBench S4's 3,452
            training clips at 224 px 2.6 GB.
        paste: objects cut out of other training clips, see ``pcmanet.data.paste`` (train
            only; every clip needs a category).
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


class MS3Dataset(ObjectDataset):
    """AVSBench-object multi-sources (MS3), section 2: 5 frames, all 5 labelled in every split.

    Frames live in ``ms3_data/visual_frames/<name>/<name>.mp4_<k>.png`` (no split level);
    masks and audio have a split level but no category. ``category`` is "".

    Args:
        root: ``avsbench_data/``, the folder that holds ``Multi-sources/``.
        split, audio_source, image_size, augment, max_items, cache: as for :class:`S4Dataset`.
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
