"""Reading AVSBench files: CSV tables, RGB frames, binary and colour masks, wav audio, pickles.

Every reader turns a missing or unreadable file into a :class:`DataError` whose message starts
with the path, so a bad file deep in an epoch names itself. Layout facts are in
docs/avsbench.md; the section numbers below refer to it.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pcmanet.audio.frontend import log_mel

from .transforms import Geometry, image_to_tensor


class DataError(ValueError):
    """A data file or folder that cannot be used; the message names the path and the problem."""


class DataNotFoundError(DataError, FileNotFoundError):
    """An expected data file or folder does not exist."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def require_file(path: Path, hint: str = "") -> Path:
    """Return path if it is a file, else raise DataNotFoundError naming it (plus the hint)."""
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file" + (f"; {hint}" if hint else ""))
    return path


def require_dir(path: Path, hint: str = "") -> Path:
    """Return path if it is a folder, else raise DataNotFoundError naming it (plus the hint)."""
    if not path.is_dir():
        raise DataNotFoundError(f"{path}: no such folder" + (f"; {hint}" if hint else ""))
    return path


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def read_csv(path: Path, hint: str = "") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A comma-separated table with a header row -> (header, [(line number, cells), ...]).

    Cells and header names are stripped of surrounding whitespace, a UTF-8 byte-order mark is
    dropped and blank lines are skipped. Everything stays a string (a name such as ``0123`` or
    ``-en-yFsmIO8`` is never parsed as a number).
    """
    require_file(path, hint)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(f), 1)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file: {_first_line(e)}") from None
    lines = [(n, row) for n, row in lines if any(row)]
    if not lines:
        raise DataError(f"{path}: empty CSV file (expected a header row)")
    return lines[0][1], lines[1:]


def column(header: Sequence[str], name: str, fallback: int | None, path: Path) -> int:
    """Index of column ``name`` in the header; ``fallback`` (a position) if the name is absent."""
    if name in header:
        return header.index(name)
    if fallback is None:
        raise DataError(f"{path}: no column {name!r} in the header {list(header)}")
    return fallback


def split_rows(path: Path, rows: list[tuple[int, list[str]]], split_col: int, split: str,
               needed: int) -> list[tuple[int, list[str]]]:
    """Rows of one split, each checked to have ``needed`` cells; an empty split raises."""
    for line, row in rows:
        if len(row) < needed:
            raise DataError(f"{path}, line {line}: {len(row)} columns, expected at least "
                            f"{needed}: {row}")
    chosen = [(line, row) for line, row in rows if row[split_col] == split]
    if not chosen:
        found = sorted({row[split_col] for _, row in rows})
        raise DataError(f"{path}: split {split!r} is empty (no rows with split == {split!r}; "
                        f"splits found: {found})")
    return chosen


def read_json(path: Path, hint: str = "") -> Any:
    """Parse a JSON file; missing or malformed -> DataError naming it."""
    require_file(path, hint)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable JSON file: {_first_line(e)}") from None


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (PNG/JPG); missing or corrupt -> DataError."""
    require_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()  # detached from the closed file
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image: {_first_line(e)}") from None


def read_rgb(path: Path) -> Image.Image:
    """A frame as an RGB PIL image, as the official ``Image.open(p).convert('RGB')``."""
    return open_image(path).convert("RGB")


def read_frames(paths: list[Path], geometry: Geometry | None) -> Tensor:
    """Frame files -> (n, 3, H, W) float32 in [0, 1]; all frames must share one size."""
    images = [read_rgb(p) for p in paths]
    if geometry is not None:
        images = [geometry(img, False) for img in images]
    for p, img in zip(paths, images):
        if img.size != images[0].size:
            raise DataError(f"{p}: frame size {img.size} (w, h) differs from {paths[0]} "
                            f"{images[0].size}; frames of a clip must share one size "
                            "(or pass image_size)")
    return torch.stack([image_to_tensor(img) for img in images])  # (n, 3, H, W)


def count_files(folder: Path, pattern: re.Pattern[str]) -> int:
    """Files in folder named like ``<i>.jpg`` / ``<i>.png``; missing folder -> DataError."""
    require_dir(folder)
    try:
        return sum(1 for n in os.listdir(folder) if pattern.fullmatch(n))
    except OSError as e:
        raise DataError(f"{folder}: cannot list: {e}") from None


def read_binary_mask(path: Path) -> np.ndarray:
    """S4/MS3 ground truth: a 0/255 single-channel PNG -> (H, W) uint8 0/1 (``value > 127``).

    The official loaders decode with ``convert('1')`` (S4) or ``convert('P')`` then ``/255``
    (MS3); on the real masks, which hold only 0 and 255, both give exactly ``value / 255`` in
    {0, 1} (dithering has no error to spread when every pixel is 0 or 255), which is what
    ``value > 127`` gives. On grey values the two official decoders disagree with each other
    (dither vs fraction); the threshold is the clean binary reading of such a file.

    Accepted modes: ``1``, ``L``, ``P`` (palette *indices*, as MS3's ``convert('P')`` reads
    them), and ``LA``/``RGB``/``RGBA`` whose colour channels are equal (a grey mask saved as
    colour). A mask whose largest value is 1 (a 0/1 mask, e.g. a P-mode PNG with indices 0/1)
    raises: the official loaders would read it as 1/255 (MS3) or almost all 0 (S4), silently.

    Raises:
        DataError: missing or unreadable file, a colour (non-grey) mask, or a 0/1 mask.
    """
    img = open_image(path)
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8)  # bool -> 0/1
    if img.mode in ("L", "P"):
        values = np.asarray(img)
    elif img.mode in ("LA", "RGB", "RGBA"):
        channels = np.asarray(img)[..., : 1 if img.mode == "LA" else 3]  # (H, W, c)
        if not (channels == channels[..., :1]).all():
            raise DataError(f"{path}: a colour {img.mode} image; a binary mask must be a "
                            "single-channel 0/255 PNG (background 0, sounding object 255)")
        values = channels[..., 0]
    else:
        raise DataError(f"{path}: unsupported mask mode {img.mode!r}; expected a single-channel "
                        "0/255 PNG (mode L, 1 or P)")
    if values.size and int(values.max()) == 1:
        raise DataError(f"{path}: mask values are 0/1, but AVSBench masks are 0/255 (the official "
                        "loaders would read this file as 1/255 or as empty); save it as 0/255")
    return (values > 127).astype(np.uint8)


def voc_palette(num_classes: int) -> np.ndarray:
    """PASCAL-VOC colour map, (num_classes, 3) uint8: class j -> RGB (section 3).

    Bit b of j goes to channel ``b % 3`` at bit position ``7 - b // 3``; 0 is black
    (background), 1 -> (128, 0, 0), 2 -> (0, 128, 0), 3 -> (128, 128, 0), 4 -> (0, 0, 128).
    """
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for j in range(num_classes):
        lab, shift = j, 7
        while lab > 0:
            for ch in range(3):
                palette[j, ch] |= ((lab >> ch) & 1) << shift
            lab >>= 3
            shift -= 1
    return palette


def decode_color_mask(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colour mask (H, W, 3) uint8 -> class ids (H, W) int64 by exact palette match.

    Equal to the official ``argmax_j all(pixel == palette[j])``: a colour that is not in the
    palette becomes 0 (background); a colour listed twice takes the lower id.
    """
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) \
        | palette[:, 2]
    lookup: dict[int, int] = {}
    for j, k in enumerate(keys.tolist()):
        lookup.setdefault(k, j)  # first (lowest) id wins, as argmax does
    uniq, inverse = np.unique(codes, return_inverse=True)
    ids = np.array([lookup.get(int(u), 0) for u in uniq], dtype=np.int64)
    return ids[inverse].reshape(codes.shape)


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------


def _read_pcm16(path: Path) -> tuple[np.ndarray, int] | None:
    """16-bit PCM through the stdlib ``wave`` module -> ((S, channels) int16, rate), else None."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                return None
            channels, rate = w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError):
        return None  # not plain PCM (float, extensible, ...) or not a wav: try PyAV
    data = np.frombuffer(raw, dtype="<i2")
    data = data[: len(data) // channels * channels]  # drop a torn trailing frame
    return data.reshape(-1, channels), rate


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    """Any audio file PyAV (FFmpeg) decodes -> ((S, channels) int16, rate), as soundfile's int16."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16p", layout=stream.layout, rate=stream.rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())  # (channels, n) int16
        for out in resampler.resample(None):  # flush
            chunks.append(out.to_ndarray())
        rate = int(stream.rate)
    if not chunks:
        raise ValueError("no audio samples")
    return np.concatenate(chunks, axis=1).T, rate


def read_wave(path: Path) -> tuple[np.ndarray, int]:
    """Audio file -> (mono wave (S,) float64 in [-1, 1), sample rate), as torchvggish reads it.

    ``int16 / 32768.0`` then the mean over channels (``vggish_input.wavfile_to_examples``).
    16-bit PCM wav goes through the stdlib ``wave`` module; anything else (float or
    extensible wav, other formats) is decoded by PyAV and converted to int16 first.
    """
    require_file(path)
    try:
        pcm = _read_pcm16(path)
        data, rate = pcm if pcm is not None else _read_av(path)
    except Exception as e:  # PyAV raises its own error family on garbage
        raise DataError(f"{path}: not a readable audio file: {_first_line(e)}") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio file holds no samples")
    wave_f64 = data / 32768.0  # (S, channels) float64
    return wave_f64.mean(axis=1), rate  # (S,)


def wav_log_mel(path: Path) -> Tensor:
    """Audio file -> VGGish examples (N, 1, 96, 64) float32 via ``pcmanet.audio.log_mel``."""
    wave_f64, rate = read_wave(path)
    try:
        return log_mel(wave_f64, rate)
    except ValueError as e:
        raise DataError(f"{path}: {_first_line(e)}") from None


def read_logmel_pickle(path: Path) -> Tensor:
    """A precomputed AVSBench ``audio_log_mel/*.pkl`` -> (N, 1, 96, 64) float32, detached.

    WARNING: ``pickle.load`` can execute arbitrary code stored in the file. Read only pickles
    from a trusted source (the official AVSBench release); prefer the wav files otherwise.
    The files are ``pickle.dump`` of a torch tensor with ``requires_grad=True``, so torch must
    be importable and the result is ``.detach()``-ed, as the official loader does.
    """
    require_file(path)
    try:
        with path.open("rb") as f:
            obj = pickle.load(f)  # trusted data only, see the docstring
    except Exception as e:  # unpickling garbage raises many types
        raise DataError(f"{path}: not a readable pickle: {_first_line(e)}") from None
    if not isinstance(obj, Tensor):
        raise DataError(f"{path}: expected a pickled torch.Tensor, got {type(obj).__name__}")
    if obj.dim() != 4 or tuple(obj.shape[1:]) != (1, 96, 64) or obj.shape[0] == 0:
        raise DataError(f"{path}: expected a log-mel tensor (N, 1, 96, 64), "
                        f"got shape {tuple(obj.shape)}")
    return obj.detach().to(torch.float32)
