"""Synthetic AVSBench-layout data sets and the live demo scene (pcmanet.data.synthetic*)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import pickle
import re
import threading
import wave
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from pcmanet.audio import log_mel
from pcmanet.data import build_dataset
from pcmanet.data.synthetic import (
    CLASS_NAMES,
    DemoScene,
    main,
    plan_dataset,
    write_dataset,
    write_demo_video,
    youtube_ids,
)
from pcmanet.data.synthetic_classes import (
    ALT_OBJECT_CLASSES,
    OBJECT_CLASSES,
    SIGNS_OBJECT_CLASSES,
    STYLES,
    ObjectClass,
)
from pcmanet.data.synthetic_scene import (
    FRAME_TIMES,
    Motion,
    ObjectInstance,
    mix_clip,
    object_mask,
    render,
    sample_instance,
    sample_motion,
    visible_masks,
)
from pcmanet.data.synthetic_shapes import Shape
from pcmanet.data.synthetic_sound import (
    Voice,
    synthesize,
)

SIZES = {"train": 4, "val": 2, "test": 2}
SIZE = 64
NAME = re.compile(r"^[A-Za-z0-9_-]{11}$")


def _generate(root: Path, seed: int = 0, style: str = "shapes") -> Path:
    for task in ("s4", "ms3"):
        write_dataset(root, task, SIZES, size=SIZE, seed=seed, pkl=True, style=style)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def alt_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("synthetic_alt"), style="alt")


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def _groups(data: Path, folder: str) -> list[dict]:
    return json.loads((data / folder / "synthetic_meta.json").read_text())["groups"]


def _read_wav(path: Path) -> tuple[np.ndarray, wave._wave_params]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return pcm, params


# -- layout --------------------------------------------------------------------------------------


def test_s4_layout(data: Path) -> None:
    header, rows = _rows(data / "Single-source" / "s4_meta_data.csv")
    assert header == ["name", "start_time", "category", "split"]
    assert Counter(r[3] for r in rows) == SIZES
    d = data / "Single-source" / "s4_data"
    for name, start, cat, split in rows:
        assert NAME.match(name) and start.isdigit() and cat in CLASS_NAMES
        for k in range(1, 6):
            assert (d / "visual_frames" / split / cat / name / f"{name}_{k}.png").is_file()
            mask = d / "gt_masks" / split / cat / name / f"{name}_{k}.png"
            assert mask.is_file() == (k == 1 or split != "train")  # S4 train: first mask only
        assert (d / "audio_wav" / split / cat / f"{name}.wav").is_file()
        assert (d / "audio_log_mel" / split / cat / f"{name}.pkl").is_file()
    names = [r[0] for r in rows]
    assert len(set(names)) == len(names)
    assert names[0].startswith("-") and names[1].startswith("_") and "_" in names[2][1:]
    assert len(list((d / "gt_masks" / "train").rglob("*.png"))) == SIZES["train"]
    assert any("-" in c for c in CLASS_NAMES)  # like AVSBench's horse_clip-clop


def test_ms3_layout(data: Path) -> None:
    header, rows = _rows(data / "Multi-sources" / "ms3_meta_data.csv")
    assert header == ["video_id", "split"]
    assert Counter(r[1] for r in rows) == SIZES
    d = data / "Multi-sources" / "ms3_data"
    for name, split in rows:
        base, index = name.rsplit("_", 1)
        assert NAME.match(base) and index.isdigit()
        for k in range(1, 6):
            assert (d / "visual_frames" / name / f"{name}.mp4_{k}.png").is_file()  # no split
            assert (d / "gt_masks" / split / name / f"{name}_{k}.png").is_file()
        assert (d / "audio_wav" / split / f"{name}.wav").is_file()
        assert (d / "audio_log_mel" / split / f"{name}.pkl").is_file()
    assert len({r[0] for r in rows}) == len(rows)
    assert sorted(p.name for p in (d / "visual_frames").iterdir()) == sorted(r[0] for r in rows)


def test_wavs_are_5s_16k_16bit(data: Path) -> None:
    wavs = sorted(data.rglob("*.wav"))
    assert len(wavs) == 2 * sum(SIZES.values())
    for path in wavs:
        pcm, p = _read_wav(path)
        assert (p.framerate, p.sampwidth, p.nchannels, p.nframes) == (16000, 2, 1, 80000)
        assert 0 < np.abs(pcm).max() < 32767  # peak-normalised, never clipped


def test_frames_and_masks(data: Path) -> None:
    for path in data.rglob("visual_frames/**/*.png"):
        img = Image.open(path)
        assert img.mode == "RGB" and img.size == (SIZE, SIZE)
    for path in data.rglob("gt_masks/**/*.png"):
        img = Image.open(path)
        assert img.mode == "L" and img.size == (SIZE, SIZE)
        assert set(np.unique(np.asarray(img))) <= {0, 255}
        if "Single-source" in path.parts:  # the sounding object is visible in every S4 frame
            assert (np.asarray(img) == 255).sum() >= 4


def test_pkl_is_the_wavs_log_mel(data: Path) -> None:
    for pkl in data.rglob("*.pkl"):
        with open(pkl, "rb") as f:
            mel = pickle.load(f)
        assert isinstance(mel, torch.Tensor) and mel.shape == (5, 1, 96, 64)
        assert mel.dtype == torch.float32 and mel.requires_grad and mel.is_leaf
        wav = Path(str(pkl).replace("audio_log_mel", "audio_wav")).with_suffix(".wav")
        pcm, _ = _read_wav(wav)
        torch.testing.assert_close(mel.detach(), log_mel(pcm / 32768.0, 16000))


# -- audio dependence ----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["Single-source", "Multi-sources"])
def test_groups_share_frames_but_not_sound_or_masks(data: Path, folder: str) -> None:
    d = data / folder
    frames, masks, wavs = {}, {}, {}
    for path in d.rglob("*.*"):
        stem = path.stem
        if "visual_frames" in path.parts:
            name, k = stem.rsplit("_", 1)
            frames[(name.removesuffix(".mp4"), int(k))] = path.read_bytes()
        elif "gt_masks" in path.parts and path.suffix == ".png":
            name, k = stem.rsplit("_", 1)
            masks[(name, int(k))] = np.asarray(Image.open(path))
        elif path.suffix == ".wav":
            wavs[stem] = _read_wav(path)[0]
    shared = 0
    for g in _groups(data, folder):
        names = [c["name"] for c in g["clips"]]
        for a, b in itertools.pairwise(names):
            shared += 1
            assert all(frames[(a, k)] == frames[(b, k)] for k in range(1, 6))
            assert not np.array_equal(wavs[a], wavs[b])
            assert any(not np.array_equal(masks[(a, k)], masks[(b, k)])
                       for k in range(1, 6) if (a, k) in masks)
    assert shared >= 3


def test_ms3_masks_are_unions_of_sounding_objects(data: Path) -> None:
    d = data / "Multi-sources" / "ms3_data" / "gt_masks"
    counts = Counter()
    for g in _groups(data, "Multi-sources"):
        for clip in g["clips"]:
            mask = np.asarray(Image.open(next(d.rglob(f"{clip['name']}_1.png"))))
            counts[len(clip["sounding"])] += 1
            assert (mask.max() == 0) == (not clip["sounding"])
    assert set(counts) <= {0, 1, 2}


def test_s4_plan_is_class_balanced() -> None:
    plan = plan_dataset("s4", {"train": 64, "val": 16, "test": 16}, seed=3)
    for split, n in (("train", 8), ("val", 2), ("test", 2)):
        counts = Counter(CLASS_NAMES[p.classes[c.sounding[0]]] for p in plan for c in p.clips
                         if c.split == split)
        assert sorted(counts.values()) == [n] * len(CLASS_NAMES)
    assert all(2 <= len(p.classes) <= 3 and len(p.clips) == 2 for p in plan)


def test_youtube_ids_unique() -> None:
    ids = youtube_ids(np.random.default_rng(0), 500)
    assert len(set(ids)) == 500 and all(NAME.match(i) for i in ids)


@pytest.mark.parametrize("style", [s for s in STYLES if s != "wide"])  # wide: test_wide_style
def test_class_sounds_are_distinguishable(style: str) -> None:
    """Clean sounds: the class-mean log-mel envelopes (5-band smoothed, so +-5 % pitch does not
    move single harmonics between bands) of disjoint instances are far apart between classes and
    close within. With background noise at 6-20 dB SNR, a nearest-centroid classifier on the
    per-band 90th percentile still names the class of held-out clips."""
    rng, n_cls = np.random.default_rng(0), len(STYLES[style])
    clean, noisy, labels = [], [], []
    for c, cls in enumerate(STYLES[style]):
        for _ in range(4):
            obj = sample_instance(cls, sample_motion(rng, (0.5, 0.5), 0.1, 0.0), rng)
            spectrum = log_mel(0.1 * synthesize(cls.sound, obj.voice, 5 * 16000, rng), 16000)
            envelope = np.convolve(np.pad(spectrum.mean((0, 1, 2)).numpy(), 2, mode="edge"),
                                   np.ones(5) / 5, "valid")  # (64,)
            clean.append(envelope)
            mel = log_mel(mix_clip([obj], 3 * 16000, rng), 16000).reshape(-1, 64).numpy()
            noisy.append(np.percentile(mel, 90, axis=0))
            labels.append(c)
    y, X = np.array(labels), np.array(clean)
    A = np.stack([X[y == c][:2].mean(0) for c in range(n_cls)])
    B = np.stack([X[y == c][2:].mean(0) for c in range(n_cls)])
    dist = np.sqrt(((A[:, None] - B[None]) ** 2).mean(-1))  # (classes, classes) RMS, log units
    within, between = dist.diagonal().max(), (dist + 1e3 * np.eye(n_cls)).min()
    assert between > 1.5 * within, (within, between)
    Z = np.array(noisy) - np.array(noisy).mean(1, keepdims=True)  # level-free
    correct = 0
    for i in range(len(Z)):
        keep = np.arange(len(Z)) != i
        centroids = np.stack([Z[keep & (y == c)].mean(0) for c in range(n_cls)])
        correct += int(np.argmin(((centroids - Z[i]) ** 2).sum(1)) == y[i])
    assert correct / len(Z) >= 0.8


def test_visible_masks_are_disjoint() -> None:
    rng = np.random.default_rng(1)
    objs = [sample_instance(cls, sample_motion(rng, (0.45 + 0.05 * i, 0.5), 0.2, 0.05), rng)
            for i, cls in enumerate(OBJECT_CLASSES[:4])]
    masks = visible_masks(objs, FRAME_TIMES[0], 64)
    assert masks.sum(0).max() == 1 and masks[-1].any()


# -- determinism and CLI -------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(data: Path, tmp_path: Path) -> None:
    first = _files(data)
    assert _files(_generate(tmp_path / "again", seed=0)) == first
    other = _files(_generate(tmp_path / "other", seed=1))
    csv_path = "Single-source/s4_meta_data.csv"
    assert other[csv_path] != first[csv_path]
    frames = lambda files: {v for k, v in files.items() if "visual_frames" in k}  # noqa: E731
    assert not frames(first) & frames(other)


def test_cli_writes_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    args = ["--out", str(tmp_path), "--task", "s4", "--train", "2", "--val", "1", "--test", "1",
            "--size", "32", "--quiet"]
    assert main(args) == 0
    assert "s4: 4 clips" in capsys.readouterr().out
    assert main(args) == 2
    assert main([*args, "--overwrite", "--channels", "2"]) == 0
    _, p = _read_wav(next(tmp_path.rglob("*.wav")))
    assert p.nchannels == 2 and p.nframes == 80000


# -- the "alt" style -----------------------------------------------------------------------------

ALT_NAMES = tuple(c.name for c in ALT_OBJECT_CLASSES)


def test_alt_classes_share_nothing_with_the_default_ones() -> None:
    assert len(set(ALT_NAMES)) == len(ALT_NAMES) == len(CLASS_NAMES)
    assert not set(ALT_NAMES) & set(CLASS_NAMES)
    assert not {c.shape for c in ALT_OBJECT_CLASSES} & {c.shape for c in OBJECT_CLASSES}
    assert not {c.sound for c in ALT_OBJECT_CLASSES} & {c.sound for c in OBJECT_CLASSES}
    assert len({c.shape for c in ALT_OBJECT_CLASSES}) == len(ALT_OBJECT_CLASSES)
    new_textures = {c.texture for c in ALT_OBJECT_CLASSES} - {c.texture for c in OBJECT_CLASSES}
    assert len(new_textures) >= 2
    hues = sorted(c.hue % 360 for c in ALT_OBJECT_CLASSES)
    assert min(np.diff([*hues, hues[0] + 360])) >= 30  # spread around the circle


def test_signs_classes_share_nothing_with_the_other_styles() -> None:
    """The third style: no name, shape, texture or sound of the other two; every shape renders
    a compact silhouette of a sensible size (no self-intersecting or degenerate polygon)."""
    names = [c.name for c in SIGNS_OBJECT_CLASSES]
    others = [*OBJECT_CLASSES, *ALT_OBJECT_CLASSES]
    assert len(set(names)) == len(names) == 8 and not set(names) & {c.name for c in others}
    for attr in ("shape", "texture", "sound"):
        mine = {getattr(c, attr) for c in SIGNS_OBJECT_CLASSES}
        assert not mine & {getattr(c, attr) for c in others}, attr
    assert len({c.shape for c in SIGNS_OBJECT_CLASSES}) == 8
    hues = sorted(c.hue % 360 for c in SIGNS_OBJECT_CLASSES)
    assert min(np.diff([*hues, hues[0] + 360])) >= 30
    rng = np.random.default_rng(3)
    for cls in SIGNS_OBJECT_CLASSES:
        obj = sample_instance(cls, sample_motion(rng, (0.5, 0.5), 0.25, 0.0), rng)
        area = object_mask(obj, 0.0, 128).mean()
        disc = np.pi * 0.25**2  # the unit-radius disc at this radius
        assert 0.25 * disc < area < 1.3 * disc, (cls.name, area / disc)


@pytest.mark.parametrize("task", ["s4", "ms3"])
def test_alt_style_reads_with_the_avsbench_loader(alt_data: Path, task: str) -> None:
    folder = {"s4": "Single-source", "ms3": "Multi-sources"}[task]
    meta = json.loads((alt_data / folder / "synthetic_meta.json").read_text())
    assert meta["style"] == "alt" and meta["classes"] == list(ALT_NAMES)
    sounding = {c["name"]: c["sounding"] for g in meta["groups"] for c in g["clips"]}
    assert all(set(g["objects"]) <= set(ALT_NAMES) for g in meta["groups"])
    for split, n in SIZES.items():
        dataset = build_dataset(task, alt_data, split)
        assert len(dataset) == n
        for i in range(n):
            item = dataset[i]
            assert item["frames"].shape == (5, 3, SIZE, SIZE)
            assert item["audio"].shape == (5, 1, 96, 64)
            assert set(sounding[item["name"]]) <= set(ALT_NAMES)
            if task == "s4":
                assert item["category"] == sounding[item["name"]][0]
            areas = item["masks"].sum((1, 2, 3))[item["mask_valid"] > 0]  # labelled frames
            if sounding[item["name"]]:  # the sounding objects are visible in every frame
                assert (areas >= 4).all()
            else:
                assert (areas == 0).all()


def test_alt_style_is_deterministic_and_new(alt_data: Path, data: Path, tmp_path: Path) -> None:
    first = _files(alt_data)
    assert _files(_generate(tmp_path / "again", seed=0, style="alt")) == first
    _, rows = _rows(alt_data / "Single-source" / "s4_meta_data.csv")
    assert {r[2] for r in rows} <= set(ALT_NAMES)
    _, default_rows = _rows(data / "Single-source" / "s4_meta_data.csv")  # same seed
    assert not {r[0] for r in rows} & {r[0] for r in default_rows}  # own clip names
    frames = lambda files: {v for k, v in files.items() if "visual_frames" in k}  # noqa: E731
    assert not frames(first) & frames(_files(data))  # own scenes


def test_unknown_style_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"'cartoon'; valid styles: shapes, alt"):
        write_dataset(tmp_path, "s4", SIZES, size=SIZE, style="cartoon")
    with pytest.raises(ValueError, match="valid styles: shapes, alt"):
        plan_dataset("ms3", SIZES, style="")
    assert not any(tmp_path.iterdir())
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--task", "s4", "--style", "cartoon", "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the usage lines
    assert "--style" in error and "shapes" in error and "alt" in error
    assert not any(tmp_path.iterdir())


def _still(cls: ObjectClass, radius: float = 0.3, angle: float = 0.0, period: float = 0.4
           ) -> ObjectInstance:
    """An unmoving object of ``cls`` at the frame centre (radius: fraction of the frame side),
    primary colour pure red, secondary pure blue (BGR)."""
    motion = Motion((0.5, 0.5), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), radius, 0.0, 0.0, 0.0, angle,
                    0.0)
    return ObjectInstance(cls, ((0.0, 0.0, 255.0), (255.0, 0.0, 0.0)), period, motion, Voice())


@pytest.mark.parametrize("cls", [*ALT_OBJECT_CLASSES, *SIGNS_OBJECT_CLASSES],
                         ids=lambda c: c.name)
def test_alt_shapes_are_solid_and_distinct(cls: ObjectClass) -> None:
    size, radius = 96, 0.3
    disc_area = math.pi * (radius * size) ** 2
    angles = [2 * math.pi * k / 24 for k in range(24)]
    mine = object_mask(_still(cls, radius), 0.0, size)
    for a in angles[::3]:
        mask = object_mask(_still(cls, radius, a), 0.0, size)
        assert 0.3 < mask.sum() / disc_area < 1.0
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    for shape in set(Shape) - {cls.shape}:  # no other silhouette matches it at any rotation
        other = dataclasses.replace(cls, shape=shape)
        for a in angles:
            theirs = object_mask(_still(other, radius, a), 0.0, size)
            assert (mine & theirs).sum() / (mine | theirs).sum() < 0.85, shape


@pytest.mark.parametrize("cls", [c for c in ALT_OBJECT_CLASSES if c.texture not in
                                 {o.texture for o in OBJECT_CLASSES}], ids=lambda c: c.name)
@pytest.mark.parametrize("period", [0.3, 0.5])
def test_new_textures_paint_two_colours(cls: ObjectClass, period: float) -> None:
    obj = _still(cls, 0.35, angle=0.4, period=period)
    image, masks = render(np.zeros((128, 128, 3), np.uint8), [obj], 0.0)
    pixels = image[masks[0]].astype(int)  # (n, 3) BGR; the shading scales both colours alike
    blue = (pixels[:, 0] > pixels[:, 2]).mean()
    assert 0.1 < blue < 0.9, blue


# -- live demo scene -----------------------------------------------------------------------------


def test_demo_audio_is_chunking_invariant() -> None:
    scene = DemoScene(seed=0, size=64)
    one_shot = scene.audio(8000, 6 * 16000)
    fresh, rng, parts, pos = DemoScene(seed=0, size=64), np.random.default_rng(0), [], 8000
    while pos < 8000 + len(one_shot):
        n = min(int(rng.integers(1, 7000)), 8000 + len(one_shot) - pos)
        parts.append(fresh.audio(pos, n))
        pos += n
    assert np.array_equal(np.concatenate(parts), one_shot)
    assert one_shot.dtype == np.float32 and np.abs(one_shot).max() <= 1.0
    assert np.abs(one_shot).max() > 0.05
    assert not np.array_equal(DemoScene(seed=1, size=64).audio(8000, 1000), one_shot[:1000])


def test_demo_sounding_object_changes() -> None:
    scene = DemoScene(seed=0, size=64, fps=10)
    names, seen = [], set()
    for i in range(0, 300, 5):  # 30 s
        image, mask, name = scene.frame(i)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
        assert (mask.max() == 255) == (name is not None)
        names.append(name)
        seen.add(name)
    changes = sum(a != b for a, b in itertools.pairwise(names))
    assert changes >= 4 and len(seen - {None}) >= 2
    assert all(3 * 16000 <= s.end - s.start <= 5 * 16000 for s in scene.segments(30 * 16000))
    again = DemoScene(seed=0, size=64, fps=10).frame(123)
    assert all(np.array_equal(a, b) for a, b in zip(again[:2], scene.frame(123)[:2]))


def test_demo_scene_is_thread_safe() -> None:
    scene, out = DemoScene(seed=2, size=32, fps=10), {}

    def video() -> None:
        out["names"] = [scene.frame(i)[2] for i in range(0, 400, 7)]

    def audio() -> None:
        out["audio"] = np.concatenate([scene.audio(s, 1600) for s in range(0, 40 * 16000, 1600)])

    threads = [threading.Thread(target=video), threading.Thread(target=audio)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ref = DemoScene(seed=2, size=32, fps=10)
    assert out["names"] == [ref.frame(i)[2] for i in range(0, 400, 7)]
    assert np.array_equal(out["audio"], ref.audio(0, 40 * 16000))


def test_write_demo_video(tmp_path: Path) -> None:
    path = tmp_path / "demo.mp4"
    sidecar = write_demo_video(path, seconds=2.0, size=64, fps=30, seed=0)
    with av.open(str(path)) as container:
        kinds = {s.type for s in container.streams}
        assert kinds == {"video", "audio"}
        samples = sum(f.samples for f in container.decode(audio=0))
        rate = container.streams.audio[0].rate
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert abs(samples / rate - 2.0) < 0.1 and len(frames) == 60
    assert frames[0].shape == (64, 64, 3)
    meta = json.loads(sidecar.read_text())
    assert sidecar == path.with_suffix(".json") and len(meta["frames"]) == 60
    scene = DemoScene(seed=0, size=64, fps=30)
    assert [f["sounding"] for f in meta["frames"]] == [scene.frame(i)[2] for i in range(60)]
    assert np.abs(frames[10].astype(int) - scene.frame(10)[0]).mean() < 12  # lossy codec
