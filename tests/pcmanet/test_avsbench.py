"""Tests for pcmanet.data: AVSBench S4/MS3/AVSS datasets on tiny copies of the exact layout."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader

from pcmanet.audio import log_mel
from pcmanet.data import (
    AVSSDataset,
    ClipAugment,
    DataError,
    DataNotFoundError,
    MS3Dataset,
    S4Dataset,
    build_dataset,
    voc_palette,
)
from pcmanet.data.media import decode_color_mask

SR = 16000
H, W = 20, 24  # small S4/MS3 frames (the real ones are 224 x 224)
OFFICIAL_IMG = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406),
                                                    (0.229, 0.224, 0.225))])

# Real-looking names: leading '-' and '_', inner '_'; a category with '-'.
S4_ROWS = [
    ("-en-yFsmIO8", "3", "horse_clip-clop", "train"),
    ("_8m_rszChvE", "1", "mynah_bird_singing", "train"),
    ("0d9u2CymIxc", "0", "helicopter", "val"),
    ("a_b-c_d_e_f", "0", "horse_clip-clop", "test"),
]
MS3_ROWS = [("Kd42SbTQv2U_11", "train"), ("_0WxgIKue_0", "train"), ("-YbShzoZWRo_25", "test")]


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(path)


def tone(seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """(S, channels) int16 tone, different frequency per channel."""
    t = np.arange(int(seconds * SR)) / SR
    cols = [0.3 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]
    return np.round(np.stack(cols, axis=1) * 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = SR) -> None:
    """16-bit PCM wav through the stdlib; samples (S, channels) int16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def write_float_wav(path: Path, samples: np.ndarray, rate: int = SR) -> None:
    """IEEE-float (format 3) mono wav, which the stdlib wave module cannot read."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def write_pkl(path: Path, tensor: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(tensor, f)


def frame_array(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def mask_array(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """0/255 binary mask with a random rectangle."""
    rng = np.random.RandomState(seed)
    m = np.zeros((h, w), dtype=np.uint8)
    y, x = rng.randint(0, h // 2), rng.randint(0, w // 2)
    m[y : y + h // 2, x : x + w // 2] = 255
    return m


def logmel_tensor(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 1, 96, 64, generator=g).requires_grad_(True)


def make_s4(root: Path, rows=S4_ROWS, header: str = "name,start_time,category,split") -> Path:
    data = root / "Single-source" / "s4_data"
    lines = [header] + [",".join(r) for r in rows]
    (root / "Single-source").mkdir(parents=True)
    (root / "Single-source" / "s4_meta_data.csv").write_text("\n".join(lines) + "\n")
    for v, (name, _, cat, split) in enumerate(rows):
        for k in range(1, 6):
            write_png(data / "visual_frames" / split / cat / name / f"{name}_{k}.png",
                      frame_array(100 * v + k))
            if split != "train" or k == 1:  # S4 train: first mask only
                write_png(data / "gt_masks" / split / cat / name / f"{name}_{k}.png",
                          mask_array(100 * v + k))
        write_wav(data / "audio_wav" / split / cat / f"{name}.wav", tone(5.0, 300 + 50 * v))
        write_pkl(data / "audio_log_mel" / split / cat / f"{name}.pkl", logmel_tensor(v))
    return root


def make_ms3(root: Path, rows=MS3_ROWS) -> Path:
    data = root / "Multi-sources" / "ms3_data"
    (root / "Multi-sources").mkdir(parents=True)
    lines = ["video_id,split"] + [",".join(r) for r in rows]
    (root / "Multi-sources" / "ms3_meta_data.csv").write_text("\n".join(lines) + "\n")
    for v, (name, split) in enumerate(rows):
        for k in range(1, 6):
            write_png(data / "visual_frames" / name / f"{name}.mp4_{k}.png", frame_array(v * 7 + k))
            write_png(data / "gt_masks" / split / name / f"{name}_{k}.png", mask_array(v * 7 + k))
        write_wav(data / "audio_wav" / split / f"{name}.wav", tone(5.0, 500 + 10 * v, channels=2))
        write_pkl(data / "audio_log_mel" / split / f"{name}.pkl", logmel_tensor(10 + v))
    return root


# AVSS: 360 x 240 frames; labels use VOC colours of classes 1..5 plus one off-palette colour.
AVSS_H, AVSS_W = 240, 360
OFF_PALETTE = (12, 34, 56)
AVSS_ROWS = [  # uid, split, label, frames, labels
    ("-s1_x", "train", "v1s", 5, 1),
    ("_m1_y", "train", "v1m", 5, 5),
    ("v2_a-b", "train", "v2", 10, 10),
    ("-s1_val", "val", "v1s", 5, 5),
]


def id_map(seed: int) -> np.ndarray:
    """(240, 360) class ids with big blocks; -1 marks the off-palette colour."""
    rng = np.random.RandomState(seed)
    ids = np.zeros((AVSS_H, AVSS_W), dtype=np.int64)
    for c in (1, 2, 3, int(rng.randint(4, 71))):
        y, x = rng.randint(0, AVSS_H - 60), rng.randint(0, AVSS_W - 80)
        ids[y : y + 60, x : x + 80] = c
    ids[:10, -10:] = -1
    return ids


def color_of(ids: np.ndarray) -> np.ndarray:
    rgb = voc_palette(71)[np.clip(ids, 0, None)]
    rgb[ids == -1] = OFF_PALETTE
    return rgb


def make_avss(root: Path, rows=AVSS_ROWS, num_labels: int = 71) -> Path:
    root.mkdir(parents=True)
    names = ["background"] + [f"class_{i}" for i in range(1, num_labels)]
    (root / "label2idx.json").write_text(json.dumps({n: i for i, n in enumerate(names)}))
    lines = ["vid,uid,s_min,s_sec,a_obj,split,label"]
    lines += [f"{uid[:4]},{uid},0,0,dog,{split},{label}" for uid, split, label, _, _ in rows]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    for v, (uid, _, label, n, m) in enumerate(rows):
        base = root / label / uid
        for i in range(n):
            (base / "frames").mkdir(parents=True, exist_ok=True)
            frame = Image.fromarray(frame_array(v * 20 + i, AVSS_H, AVSS_W))
            frame.save(base / "frames" / f"{i}.jpg")
        for i in range(m):
            write_png(base / "labels_rgb" / f"{i}.png", color_of(id_map(v * 20 + i)))
        write_wav(base / "audio.wav", tone(10.0 if label == "v2" else 5.0, 200 + 30 * v))
    return root


@pytest.fixture
def s4_root(tmp_path: Path) -> Path:
    return make_s4(tmp_path / "avsbench_data")


@pytest.fixture
def ms3_root(tmp_path: Path) -> Path:
    return make_ms3(tmp_path / "avsbench_data")


@pytest.fixture
def avss_root(tmp_path: Path) -> Path:
    return make_avss(tmp_path / "AVSS")


def expected_mask(path: Path) -> torch.Tensor:
    """The official S4 decoding: convert('1') then ToTensor -> (1, H, W)."""
    return T.ToTensor()(Image.open(path).convert("1"))


# ---------------------------------------------------------------------------------------------
# S4
# ---------------------------------------------------------------------------------------------


def test_s4_train_item_format(s4_root: Path) -> None:
    ds = S4Dataset(s4_root, "train", audio_source="pkl")
    assert len(ds) == 2 and ds.num_frames == 5
    item = ds[0]
    assert (item["name"], item["category"]) == ("-en-yFsmIO8", "horse_clip-clop")
    assert item["frames"].shape == (5, 3, H, W) and item["frames"].dtype == torch.float32
    assert item["audio"].shape == (5, 1, 96, 64) and item["audio"].dtype == torch.float32
    assert item["masks"].shape == (5, 1, H, W) and item["masks"].dtype == torch.float32
    assert item["mask_valid"].tolist() == [1, 0, 0, 0, 0]
    assert item["frame_mask"].tolist() == [1] * 5
    data = s4_root / "Single-source" / "s4_data"
    frame_dir = data / "visual_frames" / "train" / "horse_clip-clop" / "-en-yFsmIO8"
    for k in range(5):
        official = OFFICIAL_IMG(Image.open(frame_dir / f"-en-yFsmIO8_{k + 1}.png").convert("RGB"))
        assert torch.equal(item["frames"][k], official)
    mask_path = data / "gt_masks/train/horse_clip-clop/-en-yFsmIO8/-en-yFsmIO8_1.png"
    assert torch.equal(item["masks"][0], expected_mask(mask_path))
    assert set(item["masks"][0].unique().tolist()) == {0.0, 1.0}
    assert not item["masks"][1:].any()
    assert ds[1]["name"] == "_8m_rszChvE"


@pytest.mark.parametrize("split,name", [("val", "0d9u2CymIxc"), ("test", "a_b-c_d_e_f")])
def test_s4_eval_splits_have_five_masks(s4_root: Path, split: str, name: str) -> None:
    ds = S4Dataset(s4_root, split)
    item = ds[0]
    assert len(ds) == 1 and item["name"] == name
    assert item["mask_valid"].tolist() == [1] * 5
    cat = item["category"]
    for k in range(5):
        folder = s4_root / "Single-source/s4_data/gt_masks" / split / cat / name
        path = folder / f"{name}_{k + 1}.png"
        assert torch.equal(item["masks"][k], expected_mask(path))


def test_s4_csv_read_by_position_when_header_differs(tmp_path: Path) -> None:
    root = make_s4(tmp_path / "d", header="vid,t0,cls,subset")  # no 'category'/'split' names
    assert [S4Dataset(root, s, audio_source="pkl").clips[0].name for s in ("train", "val")] == [
        "-en-yFsmIO8", "0d9u2CymIxc"]


def test_s4_mask_decoding_matches_official_on_0_255_modes(tmp_path: Path) -> None:
    root = make_s4(tmp_path / "d")
    name, cat = "0d9u2CymIxc", "helicopter"
    folder = root / "Single-source/s4_data/gt_masks/val" / cat / name
    array = mask_array(3)
    write_png(folder / f"{name}_1.png", array, mode="1")  # 1-bit
    write_png(folder / f"{name}_2.png", np.stack([array] * 3, axis=-1))  # grey saved as RGB
    masks = S4Dataset(root, "val")[0]["masks"]
    assert torch.equal(masks[0, 0], torch.from_numpy(array / 255).float())
    assert torch.equal(masks[1, 0], torch.from_numpy(array / 255).float())


def test_mask_with_values_0_1_raises_naming_file(tmp_path: Path) -> None:
    root = make_s4(tmp_path / "d")
    path = root / "Single-source/s4_data/gt_masks/val/helicopter/0d9u2CymIxc/0d9u2CymIxc_3.png"
    write_png(path, (mask_array(3) // 255).astype(np.uint8))  # 0/1 values
    with pytest.raises(DataError, match="0/1") as info:
        S4Dataset(root, "val")[0]
    assert str(path) in str(info.value)
    img = Image.fromarray((mask_array(3) // 255).astype(np.uint8), mode="L").convert("P")
    img.save(path)  # P mode with indices 0/1
    with pytest.raises(DataError, match="0/1"):
        S4Dataset(root, "val")[0]


def test_image_size_resizes_frames_bilinear_and_masks_nearest(s4_root: Path) -> None:
    item = S4Dataset(s4_root, "val", image_size=16)[0]
    assert item["frames"].shape == (5, 3, 16, 16) and item["masks"].shape == (5, 1, 16, 16)
    folder = s4_root / "Single-source/s4_data"
    frame = Image.open(folder / "visual_frames/val/helicopter/0d9u2CymIxc/0d9u2CymIxc_2.png")
    official = OFFICIAL_IMG(frame.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    assert torch.equal(item["frames"][1], official)
    mask = Image.open(folder / "gt_masks/val/helicopter/0d9u2CymIxc/0d9u2CymIxc_2.png")
    nearest = np.array(mask.resize((16, 16), Image.Resampling.NEAREST)) / 255
    assert torch.equal(item["masks"][1, 0], torch.from_numpy(nearest).float())


# ---------------------------------------------------------------------------------------------
# MS3
# ---------------------------------------------------------------------------------------------


def test_ms3_item_format(ms3_root: Path) -> None:
    ds = MS3Dataset(ms3_root, "train")
    assert [c.name for c in ds.clips] == ["Kd42SbTQv2U_11", "_0WxgIKue_0"]
    item = ds[1]
    assert (item["name"], item["category"]) == ("_0WxgIKue_0", "")
    assert item["frames"].shape == (5, 3, H, W) and item["masks"].shape == (5, 1, H, W)
    assert item["mask_valid"].tolist() == [1] * 5 and item["frame_mask"].tolist() == [1] * 5
    data = ms3_root / "Multi-sources" / "ms3_data"
    for k in range(5):
        frame = Image.open(data / "visual_frames/_0WxgIKue_0" / f"_0WxgIKue_0.mp4_{k + 1}.png")
        assert torch.equal(item["frames"][k], OFFICIAL_IMG(frame.convert("RGB")))
        mask = Image.open(data / "gt_masks/train/_0WxgIKue_0" / f"_0WxgIKue_0_{k + 1}.png")
        assert torch.equal(item["masks"][k], T.ToTensor()(mask.convert("P")))  # official MS3
    assert MS3Dataset(ms3_root, "test")[0]["name"] == "-YbShzoZWRo_25"


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------


def test_audio_from_wav_equals_log_mel_of_samples(s4_root: Path, ms3_root: Path) -> None:
    s4 = S4Dataset(s4_root, "val")[0]
    samples = tone(5.0, 300 + 50 * 2)[:, 0] / 32768.0
    assert torch.equal(s4["audio"], log_mel(samples, SR))
    ms3 = MS3Dataset(ms3_root, "train")[0]
    stereo = tone(5.0, 500, channels=2) / 32768.0
    assert torch.equal(ms3["audio"], log_mel(stereo.mean(axis=1), SR))  # stereo -> mono mean


@pytest.mark.parametrize("seconds,examples", [(3.0, 3), (7.5, 7)])
def test_wav_audio_is_padded_by_repeat_or_cut_to_five(s4_root: Path, seconds: float,
                                                      examples: int) -> None:
    path = s4_root / "Single-source/s4_data/audio_wav/val/helicopter/0d9u2CymIxc.wav"
    write_wav(path, tone(seconds))
    full = log_mel(tone(seconds)[:, 0] / 32768.0, SR)
    assert full.shape[0] == examples
    audio = S4Dataset(s4_root, "val")[0]["audio"]
    assert audio.shape == (5, 1, 96, 64)
    n = min(examples, 5)
    assert torch.equal(audio[:n], full[:n])
    assert all(torch.equal(audio[k], full[-1]) for k in range(n, 5))  # repeated last example


def test_non_pcm16_wav_falls_back_to_pyav(s4_root: Path) -> None:
    ints = tone(5.0)[:, 0]
    path = s4_root / "Single-source/s4_data/audio_wav/val/helicopter/0d9u2CymIxc.wav"
    write_float_wav(path, ints / 32768.0)  # exact in int16 steps, so the s16 conversion is exact
    with pytest.raises(wave.Error), wave.open(str(path)):
        pass
    assert torch.equal(S4Dataset(s4_root, "val")[0]["audio"], log_mel(ints / 32768.0, SR))


def test_audio_from_pkl_equals_stored_tensor(s4_root: Path, ms3_root: Path) -> None:
    audio = S4Dataset(s4_root, "val", audio_source="pkl")[0]["audio"]
    assert torch.equal(audio, logmel_tensor(2).detach()) and not audio.requires_grad
    audio = MS3Dataset(ms3_root, "test", audio_source="pkl")[0]["audio"]
    assert torch.equal(audio, logmel_tensor(12).detach())


# ---------------------------------------------------------------------------------------------
# AVSS
# ---------------------------------------------------------------------------------------------


def official_geometry(img: Image.Image, train: bool, is_mask: bool) -> Image.Image:
    """Independent rendering of color_dataloader's crop_resize_img / resize_img at 224."""
    method = Image.Resampling.NEAREST if is_mask else Image.Resampling.BILINEAR
    if not train:
        return img.resize((224, 224), method)
    w, h = img.size
    oh, ow = (224, int(1.0 * w * 224 / h)) if w > h else (int(1.0 * h * 224 / w), 224)
    img = img.resize((ow, oh), method)
    x1, y1 = round((ow - 224) / 2.0), round((oh - 224) / 2.0)
    return img.crop((x1, y1, x1 + 224, y1 + 224))


def test_avss_items_flags_padding_and_labels(avss_root: Path) -> None:
    ds = AVSSDataset(avss_root, "train")
    assert len(ds) == 3 and ds.num_classes == 71 and len(ds.class_names) == 71
    flags = {  # label -> (frame_mask, mask_valid), section 3 table
        "v1s": ([1] * 5 + [0] * 5, [1] + [0] * 9),
        "v1m": ([1] * 5 + [0] * 5, [1] * 5 + [0] * 5),
        "v2": ([1] * 10, [1] * 10),
    }
    for v, item in enumerate(ds):
        uid, _, label, n, m = AVSS_ROWS[v]
        assert (item["name"], item["category"]) == (uid, label)
        assert item["frames"].shape == (10, 3, 224, 224) and item["frames"].dtype == torch.float32
        assert item["masks"].shape == (10, 224, 224) and item["masks"].dtype == torch.int64
        assert item["audio"].shape == (10, 1, 96, 64)
        assert (item["frame_mask"].tolist(), item["mask_valid"].tolist()) == flags[label]
        assert not item["frames"][n:].any() and not item["masks"][m:].any()  # zero padding
        assert not item["audio"][n:].any()  # v1 audio zero-padded to 10 examples
        samples = tone(10.0 if label == "v2" else 5.0, 200 + 30 * v)[:, 0] / 32768.0
        assert torch.equal(item["audio"][:n], log_mel(samples, SR))
        base = avss_root / label / uid
        for i in range(n):
            frame = official_geometry(Image.open(base / "frames" / f"{i}.jpg").convert("RGB"),
                                      True, False)
            assert torch.equal(item["frames"][i], OFFICIAL_IMG(frame))
        for i in range(m):
            ids = id_map(v * 20 + i)
            ids[ids == -1] = 0  # off-palette colour -> background
            want = np.array(official_geometry(Image.fromarray(ids.astype(np.uint8)), True, True))
            assert torch.equal(item["masks"][i], torch.from_numpy(want.astype(np.int64)))
            assert item["masks"][i].max() > 3  # the random class in 4..70 survived the crop


def test_avss_val_uses_plain_resize(avss_root: Path) -> None:
    item = AVSSDataset(avss_root, "val")[0]
    base = avss_root / "v1s" / "-s1_val"
    frame = official_geometry(Image.open(base / "frames/2.jpg").convert("RGB"), False, False)
    assert torch.equal(item["frames"][2], OFFICIAL_IMG(frame))
    ids = id_map(3 * 20 + 4)
    ids[ids == -1] = 0
    want = np.array(official_geometry(Image.fromarray(ids.astype(np.uint8)), False, True))
    assert torch.equal(item["masks"][4], torch.from_numpy(want.astype(np.int64)))
    assert item["mask_valid"].tolist() == [1] + [0] * 9  # v1s: official gt flag in every split


def test_voc_palette_and_exact_colour_decoding() -> None:
    palette = voc_palette(71)
    assert palette[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0],
                                    [0, 0, 128]]
    assert len({tuple(c) for c in palette.tolist()}) == 71
    rgb = np.array([[[128, 0, 0], [0, 128, 0], [127, 0, 0], [64, 128, 0]]], dtype=np.uint8)
    assert decode_color_mask(rgb, palette).tolist() == [[1, 2, 0, palette.tolist().index(
        [64, 128, 0])]]


def test_avss_label2idx_must_have_71_entries(tmp_path: Path) -> None:
    root = make_avss(tmp_path / "AVSS", num_labels=70)
    with pytest.raises(DataError, match="71") as info:
        AVSSDataset(root, "train")
    assert str(root / "label2idx.json") in str(info.value)
    (root / "label2idx.json").unlink()
    with pytest.raises(DataNotFoundError, match=r"label2idx\.json"):
        AVSSDataset(root, "train")


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def half_red_clip(tmp_path: Path) -> Path:
    """S4 data whose train frames have a red left half and whose mask marks the left half."""
    root = make_s4(tmp_path / "d", rows=[("_aug_me-1", "0", "horse_clip-clop", "train")])
    data = root / "Single-source/s4_data"
    frame = np.zeros((H, W, 3), dtype=np.uint8)
    frame[:, : W // 2, 0] = 255
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[:, : W // 2] = 255
    for k in range(1, 6):
        write_png(data / "visual_frames/train/horse_clip-clop/_aug_me-1" / f"_aug_me-1_{k}.png",
                  frame)
    write_png(data / "gt_masks/train/horse_clip-clop/_aug_me-1/_aug_me-1_1.png", mask)
    return root


def test_flip_moves_frames_and_masks_together() -> None:
    frames = torch.zeros(5, 3, H, W)
    frames[:, 0, :, : W // 2] = 1.0  # red left half
    masks = torch.zeros(1, 1, H, W)
    masks[..., : W // 2] = 1.0
    flip = ClipAugment(flip_p=1.0, scale_min=1.0, brightness=0, contrast=0, saturation=0)
    out_frames, out_masks = flip(frames, masks)
    assert torch.equal(out_frames, frames.flip(-1)) and torch.equal(out_masks, masks.flip(-1))
    assert out_masks[0, 0, :, -1].all() and not out_masks[0, 0, :, 0].any()


def test_dataset_augment_keeps_alignment_and_is_seeded(tmp_path: Path) -> None:
    ds = S4Dataset(half_red_clip(tmp_path), "train", augment=True, audio_source="pkl")
    std, mean = torch.tensor([0.229, 0.224, 0.225]), torch.tensor([0.485, 0.456, 0.406])
    flipped = 0
    for seed in range(8):
        torch.manual_seed(seed)
        item = ds[0]
        red = item["frames"][0, 0] * std[0] + mean[0] > 0.5  # (H, W) after de-normalising
        fg = item["masks"][0, 0] > 0.5
        assert (red == fg).float().mean() > 0.95  # one boundary column may differ (bilinear)
        assert set(item["masks"].unique().tolist()) <= {0.0, 1.0}
        assert item["mask_valid"].tolist() == [1, 0, 0, 0, 0] and not item["masks"][1:].any()
        flipped += int(fg[:, -1].all())
        torch.manual_seed(seed)
        again = ds[0]
        assert torch.equal(again["frames"], item["frames"])
        assert torch.equal(again["masks"], item["masks"])
    assert 0 < flipped < 8  # both outcomes of the coin occurred


@pytest.mark.parametrize("task", ["s4", "ms3"])
def test_cache_gives_the_decoded_items_exactly_and_augments_anew(s4_root: Path, ms3_root: Path,
                                                                 task: str) -> None:
    """data.cache: every read equals the uncached read bit for bit (a second read comes from
    memory: the files are gone by then); with augmentation, draws differ per read and never
    leak into the cached clip."""
    root = s4_root if task == "s4" else ms3_root
    split = "test"
    plain = build_dataset(task, root, split, image_size=48)
    cached = build_dataset(task, root, split, image_size=48, cache=True)
    first = [cached[i] for i in range(len(cached))]
    shutil.rmtree(root)  # second reads must not touch the files
    for i, item in enumerate(first):
        again = cached[i]
        for key in ("frames", "audio", "masks", "mask_valid"):
            assert torch.equal(again[key], item[key]), key  # type: ignore[literal-required]
    train_root = make_s4(root.parent / "again") if task == "s4" else make_ms3(root.parent / "again")
    uncached = build_dataset(task, train_root, "train", image_size=48)
    aug = build_dataset(task, train_root, "train", image_size=48, augment=True, cache=True)
    raw = aug._read(0)  # type: ignore[attr-defined]
    draws = []
    for seed in range(4):
        torch.manual_seed(seed)
        draws.append(aug[0]["frames"])
    assert not all(torch.equal(draws[0], d) for d in draws[1:])
    for got, want in zip(aug._read(0), raw, strict=True):  # type: ignore[attr-defined]
        assert torch.equal(got, want)
    plain_item, cached_item = uncached[0], build_dataset(task, train_root, "train", image_size=48,
                                                         cache=True)[0]
    assert torch.equal(plain_item["frames"], cached_item["frames"])
    del plain


def test_avss_refuses_the_cache(avss_root: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.cache"):
        AVSSDataset(avss_root, "train", cache=True)


def test_avss_augment_shapes(avss_root: Path) -> None:
    torch.manual_seed(0)
    item = AVSSDataset(avss_root, "train", augment=True, max_items=1)[0]
    assert item["masks"].dtype == torch.int64 and item["masks"].shape == (10, 224, 224)
    assert not item["frames"][5:].any() and not item["masks"][1:].any()


# ---------------------------------------------------------------------------------------------
# Errors, factory, batching
# ---------------------------------------------------------------------------------------------


def test_wrong_root_names_the_expected_path(s4_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        S4Dataset(tmp_path / "nowhere", "train")
    msg = str(info.value)
    assert str(tmp_path / "nowhere" / "Single-source" / "s4_meta_data.csv") in msg
    assert "Single-source/ and Multi-sources/" in msg
    with pytest.raises(DataNotFoundError, match="pass its parent"):
        S4Dataset(s4_root / "Single-source", "train")
    with pytest.raises(DataNotFoundError, match=r"ms3_meta_data\.csv"):
        MS3Dataset(s4_root, "train")
    with pytest.raises(DataNotFoundError, match=r"metadata\.csv"):
        AVSSDataset(s4_root, "train")


def test_missing_files_are_named(s4_root: Path) -> None:
    data = s4_root / "Single-source/s4_data"
    name, cat = "0d9u2CymIxc", "helicopter"
    for path, source in [
        (data / "visual_frames/val" / cat / name / f"{name}_4.png", "wav"),
        (data / "gt_masks/val" / cat / name / f"{name}_5.png", "wav"),
        (data / "audio_wav/val" / cat / f"{name}.wav", "wav"),
        (data / "audio_log_mel/val" / cat / f"{name}.pkl", "pkl"),
    ]:
        content = path.read_bytes()
        path.unlink()
        ds = S4Dataset(s4_root, "val", audio_source=source)
        with pytest.raises(DataNotFoundError) as info:
            ds[0]
        assert str(path) in str(info.value)
        path.write_bytes(b"garbage")
        with pytest.raises(DataError) as info:
            ds[0]
        assert str(path) in str(info.value)
        path.write_bytes(content)


def test_missing_layout_folder_and_empty_split(s4_root: Path, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(s4_root / "Single-source/s4_data/audio_wav")
    with pytest.raises(DataNotFoundError, match="audio_source='pkl'") as info:
        S4Dataset(s4_root, "val")
    assert "audio_wav" in str(info.value)
    S4Dataset(s4_root, "val", audio_source="pkl")  # the pickles are still there
    root = make_ms3(tmp_path / "m", rows=[("abc_1", "train")])
    with pytest.raises(DataError, match="split 'val' is empty"):
        MS3Dataset(root, "val")


def test_option_validation() -> None:
    with pytest.raises(ValueError, match="s4, ms3, avss"):
        build_dataset("avs", "x", "train")
    with pytest.raises(ValueError, match="train, val, test"):
        S4Dataset("x", "training")
    with pytest.raises(ValueError, match="train split only"):
        S4Dataset("x", "val", augment=True)
    with pytest.raises(ValueError, match="no precomputed"):
        AVSSDataset("x", "train", audio_source="pkl")


def test_build_dataset_and_max_items(s4_root: Path, ms3_root: Path, tmp_path: Path) -> None:
    avss_root = make_avss(tmp_path / "AVSS")
    assert isinstance(build_dataset("s4", s4_root, "train", max_items=1), S4Dataset)
    assert len(build_dataset("s4", s4_root, "train", max_items=1)) == 1
    assert isinstance(build_dataset("ms3", ms3_root, "test"), MS3Dataset)
    assert len(build_dataset("avss", avss_root, "train", max_items=2)) == 2


def test_dataloader_batches_with_default_collate(s4_root: Path, ms3_root: Path) -> None:
    loader = DataLoader(S4Dataset(s4_root, "train", image_size=16), batch_size=2, num_workers=0)
    batch = next(iter(loader))
    assert batch["frames"].shape == (2, 5, 3, 16, 16) and batch["audio"].shape == (2, 5, 1, 96, 64)
    assert batch["masks"].shape == (2, 5, 1, 16, 16) and batch["mask_valid"].shape == (2, 5)
    assert batch["name"] == ["-en-yFsmIO8", "_8m_rszChvE"]
    assert batch["category"] == ["horse_clip-clop", "mynah_bird_singing"]
    batch = next(iter(DataLoader(MS3Dataset(ms3_root, "train"), batch_size=2)))
    assert batch["frames"].shape == (2, 5, 3, H, W) and batch["frame_mask"].shape == (2, 5)
