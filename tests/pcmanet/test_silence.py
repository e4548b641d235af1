"""Silence: synthetic clips where no visible object sounds (silent or off-screen), their
empty masks through the loader, the evaluation's silence figures, the swap check's pairs and
the live demo scene's silent stretches."""

from __future__ import annotations

import csv
import json
import math
import wave
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from calib.scene_eval import scene_frames, scene_scores
from pcmanet.data import build_dataset
from pcmanet.data.synthetic import (
    OFFSCREEN_CATEGORY,
    SILENT_CATEGORY,
    ClipAudio,
    DemoScene,
    main,
    plan_dataset,
    write_dataset,
)
from pcmanet.evaluate import evaluate_model
from pcmanet.model import PCMANetOutput
from pcmanet.swap_eval import swap_pairs
from stream.buffers.frames import PairedFrame

SIZES = {"train": 10, "val": 4, "test": 6}
SIZE = 48
SILENT, OFFSCREEN = 0.3, 0.2
FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same seed written plain and with silent / off-screen clips, S4 and MS3."""
    roots = {"plain": tmp_path_factory.mktemp("plain"), "silence": tmp_path_factory.mktemp("sil")}
    for task in FOLDERS:
        write_dataset(roots["plain"], task, SIZES, size=SIZE, seed=5)
        write_dataset(roots["silence"], task, SIZES, size=SIZE, seed=5, silent=SILENT,
                      offscreen=OFFSCREEN)
    return roots


def _meta(root: Path, task: str) -> dict:
    return json.loads((root / FOLDERS[task] / "synthetic_meta.json").read_text())


def _clips(root: Path, task: str) -> dict[str, dict]:
    return {c["name"]: {**c, "split": g["split"], "objects": g["objects"]}
            for g in _meta(root, task)["groups"] for c in g["clips"]}


def _pcm(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _owner(path: str) -> str:
    """The clip a data file belongs to: its folder for frames and masks, its stem for audio."""
    p = Path(path)
    return p.stem if p.suffix in (".wav", ".pkl") else p.parent.name


# -- the plan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(FOLDERS))
def test_plan_converts_exact_fractions_and_leaves_other_clips_alone(task: str) -> None:
    sizes = {"train": 40, "val": 10, "test": 20}
    plain = plan_dataset(task, sizes, seed=2)
    assert plan_dataset(task, sizes, seed=2, silent=0.0, offscreen=0.0) == plain
    plan = plan_dataset(task, sizes, seed=2, silent=0.2, offscreen=0.1)
    assert [p.key for p in plan] == [p.key for p in plain]
    assert [p.classes for p in plan] == [p.classes for p in plain]
    for split, n in sizes.items():
        kinds = Counter(c.audio for p in plan for c in p.clips if c.split == split)
        assert kinds[ClipAudio.NOISE] + kinds[ClipAudio.ZEROS] == round(0.2 * n)
        assert kinds[ClipAudio.ZEROS] == math.ceil(round(0.2 * n) / 4)  # 1 in 4 draws
        assert kinds[ClipAudio.OFFSCREEN] == round(0.1 * n)
    for p, q in zip(plan, plain, strict=True):
        for c, d in zip(p.clips, q.clips, strict=True):
            assert c.name == d.name and c.start_time == d.start_time
            if c.audio is ClipAudio.SOURCES:
                assert c == d
            else:
                assert c.sounding == ()
                assert (c.offscreen is not None) == (c.audio is ClipAudio.OFFSCREEN)
                assert c.offscreen is None or c.offscreen not in p.classes  # unseen class


def test_bad_fractions_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="silent"):
        plan_dataset("s4", {"train": 4}, silent=0.7, offscreen=0.4)
    args = ["--out", str(tmp_path), "--task", "s4", "--train", "2", "--val", "0", "--test", "0",
            "--size", "32", "--quiet", "--silent-fraction", "-0.1"]
    assert main(args) == 2
    assert "silent" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.png"))


# -- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(FOLDERS))
def test_silent_and_offscreen_clips_have_empty_masks_and_their_sound(
        sets: dict[str, Path], task: str) -> None:
    root, meta = sets["silence"], _meta(sets["silence"], task)
    assert (meta["silent_fraction"], meta["offscreen_fraction"]) == (SILENT, OFFSCREEN)
    assert "silent_fraction" not in _meta(sets["plain"], task)
    clips = _clips(root, task)
    kinds = Counter(c.get("audio", "sources") for c in clips.values())
    assert kinds["noise"] + kinds["zeros"] == sum(round(SILENT * n) for n in SIZES.values())
    assert kinds["offscreen"] == sum(round(OFFSCREEN * n) for n in SIZES.values())
    data = root / FOLDERS[task] / f"{task}_data"
    masks = {p.stem.rsplit("_", 1)[0] for p in (data / "gt_masks").rglob("*.png")}
    assert masks == set(clips)  # every clip still has its labelled masks
    for name, clip in clips.items():
        pcm = _pcm(next((data / "audio_wav").rglob(f"{name}.wav")))
        empty = all(not np.asarray(_png(p)).any()
                    for p in (data / "gt_masks").rglob(f"{name}_[1-5].png"))
        kind = clip.get("audio", "sources")
        assert empty == (not clip["sounding"])
        if kind == "zeros":
            assert not pcm.any()
        elif kind == "noise":
            assert 0 < np.abs(pcm).max() <= 0.3 * 32767  # background noise, quieter
        elif kind == "offscreen":
            assert clip["offscreen"] not in clip["objects"] and np.abs(pcm).max() > 0.3 * 32767
        if task == "s4":
            category = next((data / "audio_wav").rglob(f"{name}.wav")).parent.name
            expected = (clip["sounding"][0] if kind == "sources" else
                        OFFSCREEN_CATEGORY if kind == "offscreen" else SILENT_CATEGORY)
            assert category == expected


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


@pytest.mark.parametrize("task", list(FOLDERS))
def test_other_files_are_those_of_the_plain_set(sets: dict[str, Path], task: str) -> None:
    plain, silence = (_files(sets[k] / FOLDERS[task]) for k in ("plain", "silence"))
    changed = {n for n, c in _clips(sets["silence"], task).items() if "audio" in c}
    assert changed
    tables = {f"{task}_meta_data.csv", "synthetic_meta.json"}
    same = [k for k in silence if k not in tables and _owner(k) not in changed]
    assert same and all(silence[k] == plain[k] for k in same)
    frames = [k for k in silence if "visual_frames" in k and _owner(k) in changed]
    assert frames
    for k in frames:  # the converted clips keep their frames (S4: under another category)
        match = [v for j, v in plain.items()
                 if "visual_frames" in j and Path(j).name == Path(k).name]
        assert match == [silence[k]]


def test_loader_reads_empty_masks(sets: dict[str, Path]) -> None:
    root = sets["silence"]
    clips = _clips(root, "s4")
    for split in ("train", "test"):
        dataset = build_dataset("s4", root, split)
        for i in range(len(dataset)):  # type: ignore[arg-type]
            item = dataset[i]
            valid = item["mask_valid"].bool()
            assert valid.tolist() == ([True] + [False] * 4 if split == "train" else [True] * 5)
            sounding = bool(clips[item["name"]]["sounding"])
            assert bool((item["masks"][valid].flatten(1).sum(1) > 0).all()) == sounding
            assert item["category"] != SILENT_CATEGORY or not sounding


def test_swap_pairs_leave_out_silent_and_offscreen_clips(sets: dict[str, Path]) -> None:
    clips = _clips(sets["silence"], "s4")
    pairs = swap_pairs(_meta(sets["silence"], "s4"), "test")
    assert pairs and all("audio" not in clips[n] for pair in pairs for n in pair)
    plain_pairs = swap_pairs(_meta(sets["plain"], "s4"), "test")
    assert set(pairs) < set(plain_pairs)


# -- evaluation ----------------------------------------------------------------------------------


class _FixedMask(nn.Module):
    """Predicts the same mask for every frame: the top-left (H/4, W/4) block, or nothing."""

    def __init__(self, block: bool) -> None:
        super().__init__()
        self.block = block

    def forward(self, frames: Tensor, audio: Tensor, flag: Tensor | None = None,
                **_: object) -> PCMANetOutput:
        F_, _, H, W = frames.shape
        logits = torch.full((F_, 1, H, W), -5.0)
        if self.block:
            logits[:, :, :H // 4, :W // 4] = 5.0
        return PCMANetOutput([logits] * 4, [], [], [])


def test_evaluation_reports_area_on_empty_frames_and_miou_on_the_others(
        sets: dict[str, Path]) -> None:
    dataset = build_dataset("s4", sets["silence"], "test")
    clips = _clips(sets["silence"], "s4")
    test = [c for c in clips.values() if c["split"] == "test"]
    n_silent = 5 * sum("audio" in c for c in test)
    block = evaluate_model(_FixedMask(True), dataset, 1, torch.device("cpu"), show_progress=False)
    assert block["silent_frames"] == n_silent
    assert block["sounding_frames"] == 5 * len(test) - n_silent
    assert block["silent_area"] == pytest.approx(1 / 16) and block["silent_empty"] == 0.0
    assert set(block["silent_area_by_category"]) == {SILENT_CATEGORY, OFFSCREEN_CATEGORY}
    assert 0.0 <= block["sounding_miou"] < 1.0
    empty = evaluate_model(_FixedMask(False), dataset, 2, torch.device("cpu"),
                           show_progress=False)
    assert empty["silent_area"] == 0.0 and empty["silent_empty"] == 1.0
    assert empty["sounding_miou"] == 0.0
    # AVSBench's mIoU scores an empty-GT frame by its background fraction: 1 here.
    assert empty["miou"] == pytest.approx(n_silent / (5 * len(test)), abs=1e-6)
    plain = evaluate_model(_FixedMask(True), build_dataset("s4", sets["plain"], "test"), 1,
                           torch.device("cpu"), show_progress=False)
    assert "silent_area" not in plain and "sounding_miou" not in plain


def test_evaluation_of_ms3_reports_without_categories(sets: dict[str, Path]) -> None:
    result = evaluate_model(_FixedMask(True), build_dataset("ms3", sets["silence"], "test"), 1,
                            torch.device("cpu"), show_progress=False)
    assert result["silent_area"] == pytest.approx(1 / 16)
    assert "silent_area_by_category" not in result  # MS3 clips have no category


@pytest.mark.slow
def test_tiny_training_on_silence_reports_through_the_commands(
        sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pcmanet.evaluate import main as evaluate_main
    from pcmanet.train import main as train_main
    from tests.conftest import REPO

    out = tmp_path / "run"
    assert train_main(["--config", str(REPO / "configs" / "test_tiny.yaml"), "--data-root",
                       str(sets["silence"]), "--task", "s4", "--out", str(out),
                       "train.epochs=2", "data.image_size=64", "data.num_workers=0",
                       "train.batch_size=4"]) == 0
    losses = [json.loads(x)["loss"] for x in capsys.readouterr().out.splitlines()
              if x.startswith('{"epoch"')]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert evaluate_main(["--checkpoint", str(out / "best.pt"), "--data-root",
                          str(sets["silence"]), "--task", "s4", "--json",
                          "--num-workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= result["silent_area"] <= 1.0 and 0.0 <= result["sounding_miou"] <= 1.0


# -- the live demo scene -------------------------------------------------------------------------


def test_demo_silence_prob_sets_the_silent_stretches() -> None:
    never = DemoScene(seed=3, size=32, silence_prob=0.0).segments(60 * 16000)
    assert all(s.obj is not None for s in never)
    always = DemoScene(seed=3, size=32, silence_prob=1.0).segments(60 * 16000)
    assert [s.obj is None for s in always] == [j % 2 == 1 for j in range(len(always))]
    default = DemoScene(seed=3, size=32).segments(60 * 16000)
    assert default == DemoScene(seed=3, size=32, silence_prob=0.15).segments(60 * 16000)
    with pytest.raises(ValueError, match="silence_prob"):
        DemoScene(silence_prob=1.5)


def test_scene_frames_flag_settled_and_silent_frames() -> None:
    scene = DemoScene(seed=1, size=32, fps=5, silence_prob=1.0)
    frames = list(scene_frames(scene, range(60)))  # 12 s: sound, silence, sound
    for i, f in enumerate(frames):
        seg = scene.segment_at(max(scene.frame_sample(i) - 1, 0))
        into = (scene.frame_sample(i) - seg.start) / 16000
        assert f.settled == (seg.obj is not None and into >= 1.1)
        assert f.silent == (seg.obj is None and into >= 1.1)
        assert not (f.silent and f.truth.any())
    assert any(f.silent for f in frames) and any(f.settled for f in frames)


class _ConstantEngine:
    """Stands in for StreamingEngine: every pixel foreground (or none)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def step(self, paired: PairedFrame) -> SimpleNamespace:
        H, W = paired.frame.image.shape[:2]
        return SimpleNamespace(prob=np.full((H, W), self.value, np.float32))


def test_scene_scores_report_area_on_silent_frames() -> None:
    full = scene_scores(lambda: _ConstantEngine(1.0), seeds=(1,), seconds=9.0, fps=5, size=32,
                        silence_prob=1.0)
    none = scene_scores(lambda: _ConstantEngine(0.0), seeds=(1,), seconds=9.0, fps=5, size=32,
                        silence_prob=1.0)
    assert full.silent_frames == none.silent_frames > 0 and full.settled_frames > 0
    assert (full.silent_area, none.silent_area, none.iou) == (1.0, 0.0, 0.0)
    assert 0.0 < full.iou < 0.5  # the whole frame against one object


def test_csv_categories_match_the_folders(sets: dict[str, Path]) -> None:
    root = sets["silence"] / "Single-source"
    with open(root / "s4_meta_data.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    cats = Counter(r[2] for r in rows)
    assert cats[SILENT_CATEGORY] == sum(round(SILENT * n) for n in SIZES.values())
    assert cats[OFFSCREEN_CATEGORY] == sum(round(OFFSCREEN * n) for n in SIZES.values())
    for name, _, cat, split in rows:
        assert (root / "s4_data" / "audio_wav" / split / cat / f"{name}.wav").is_file()
