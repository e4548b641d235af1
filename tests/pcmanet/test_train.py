"""A real (tiny) training run on generated AVSBench-layout data: loss falls, checkpoints load,
evaluation runs, resume continues, and a 2-process DDP run (gloo) trains."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from pcmanet import load_checkpoint
from pcmanet.evaluate import main as evaluate_main
from pcmanet.train import main as train_main
from tests.conftest import REPO

TINY = str(REPO / "configs" / "test_tiny.yaml")
FAST = ["data.image_size=64", "data.num_workers=0", "train.lr=2e-3", "train.batch_size=4"]


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory):
    from pcmanet.data.synthetic import main as synth_main

    root = tmp_path_factory.mktemp("syn")
    assert synth_main(["--out", str(root), "--task", "s4", "--train", "16", "--val", "4",
                       "--test", "4", "--size", "64", "--seed", "1"]) == 0
    return root


def _history(capsys):
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return lines


@pytest.mark.slow
def test_training_reduces_loss_and_writes_checkpoints(tmp_path, s4_root, capsys):
    out = tmp_path / "run"
    code = train_main(["--config", TINY, "--data-root", str(s4_root), "--task", "s4", "--out",
                       str(out), "train.epochs=4", *FAST])
    assert code == 0
    records = [r for r in _history(capsys) if "loss" in r]
    assert len(records) == 4
    assert records[-1]["loss"] < records[0]["loss"]
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "best.pt", "last.pt"}
    model, cfg, extra = load_checkpoint(out / "best.pt")
    assert cfg.name == "test_tiny" and extra["task"] == "s4" and not model.training
    assert "image_size: 64" in (out / "config.yaml").read_text()
    # The checkpoint evaluates through the command, with JSON output.
    masks_dir = tmp_path / "pred"
    assert evaluate_main(["--checkpoint", str(out / "best.pt"), "--data-root", str(s4_root),
                          "--task", "s4", "--split", "test", "--json", "--num-workers", "0",
                          "--save-masks", str(masks_dir)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_videos"] == 4 and result["n_frames"] == 20 and result["batch_size"] == 1
    pngs = sorted(masks_dir.glob("*/*.png"))
    assert len(pngs) == 20 and all(p.stem.rsplit("_", 1)[1] in "01234" for p in pngs)
    import numpy as np
    from PIL import Image

    values = set(np.unique(np.asarray(Image.open(pngs[0])))) | {0, 255}
    assert values == {0, 255}
    assert 0.0 <= result["miou"] <= 1.0 and 0.0 <= result["fscore"] <= 1.0
    # The audio-swap check runs on the synthetic groups (frames shared, audio swapped).
    from pcmanet.swap_eval import main as swap_main

    assert swap_main(["--checkpoint", str(out / "best.pt"), "--data-root", str(s4_root),
                      "--json"]) == 0
    swap = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert swap["pairs"] == 4 and swap["frames"] == 20
    assert swap["pairs_with_identical_frames"] == 4
    assert 0.0 <= swap["iou_with_new_sounding_object"] <= 1.0
    # Resume continues from last.pt to the new epoch count.
    assert train_main(["--config", TINY, "--data-root", str(s4_root), "--task", "s4", "--out",
                       str(out), "--resume", "train.epochs=5", *FAST]) == 0
    records = [r for r in _history(capsys) if "loss" in r]
    assert [r["epoch"] for r in records] == [5]
    assert records[0]["step"] == 5 * 4


@pytest.mark.slow
def test_max_minutes_stops_cleanly_and_keeps_checkpoints(tmp_path, s4_root, capsys):
    out = tmp_path / "run"
    assert train_main(["--config", TINY, "--data-root", str(s4_root), "--task", "s4", "--out",
                       str(out), "--max-minutes", "0.001", "train.epochs=50", *FAST]) == 0
    summary = _history(capsys)[-1]
    assert summary["epochs"] == 0 and summary["steps"] >= 1
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()


def test_bad_inputs_exit_with_one_clear_line(tmp_path, s4_root, capsys):
    code = train_main(["--config", TINY, "--data-root", str(tmp_path), "--task", "s4",
                       "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Single-source" in err
    code = train_main(["--config", TINY, "--data-root", str(s4_root), "--task", "s4",
                       "--out", str(tmp_path / "r"), "train.epochs=0"])
    assert code == 2 and "train.epochs: must be >= 1" in capsys.readouterr().err
    code = evaluate_main(["--checkpoint", str(tmp_path / "nope.pt"), "--data-root",
                          str(s4_root), "--task", "s4"])
    assert code == 2 and "nope.pt" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.races
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun gloo test runs on Linux")
def test_ddp_two_processes_gloo(tmp_path, s4_root):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "pcmanet.train", "--config", TINY, "--data-root", str(s4_root), "--task",
           "s4", "--out", str(out), "--device", "cpu", "train.epochs=2",
           "train.encoder_grad=labelled", *FAST]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])
    # 16 clips over 2 ranks of batch 4: 2 steps per epoch each.
    assert summary["steps"] == 4 and math.isfinite(summary["best_miou"])
    assert (out / "best.pt").is_file()


def test_lr_scale_warms_up_then_follows_steps_or_the_time_budget():
    from pcmanet.train import lr_scale

    # Constant lr at min_ratio 1, apart from the warm-up ramp.
    assert [lr_scale(s, 100, 0.0, 1.0, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    # Cosine over the steps: 1 at the start, the midpoint halfway, min_ratio at the end.
    assert lr_scale(0, 100, 0.0, 0.0, 0) == 1.0
    assert lr_scale(50, 100, 0.0, 0.0, 0) == pytest.approx(0.5)
    assert lr_scale(100, 100, 0.0, 0.1, 0) == pytest.approx(0.1)
    # A time budget that runs out before the steps do ends the decay at the deadline.
    assert lr_scale(10, 1000, 0.5, 0.0, 0) == pytest.approx(0.5)
    assert lr_scale(10, 1000, 1.7, 0.02, 0) == pytest.approx(0.02)


def test_init_copies_matching_weights_and_refuses_a_foreign_file(tmp_path, tiny_cfg):
    from dataclasses import replace

    import torch

    from pcmanet.build import build_pcmanet
    from pcmanet.checkpoint import CheckpointError, save_checkpoint
    from pcmanet.train import init_from_checkpoint

    torch.manual_seed(0)
    source = build_pcmanet(tiny_cfg)
    save_checkpoint(tmp_path / "src.pt", source, tiny_cfg)
    torch.manual_seed(1)
    target = build_pcmanet(tiny_cfg)
    report = init_from_checkpoint(target, str(tmp_path / "src.pt"))
    n = len(source.state_dict())
    assert report.startswith(f"initialised {n}/{n} tensors")
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    # Another head width: the heads stay fresh, the rest is copied, the report names them.
    wider = build_pcmanet(replace(tiny_cfg, head_hidden=24))
    report = init_from_checkpoint(wider, str(tmp_path / "src.pt"))
    assert "kept fresh: heads." in report
    assert torch.equal(wider.backbone.state_dict()["conv1.weight"],
                       source.backbone.state_dict()["conv1.weight"])
    # A file that shares no tensor with the model is surely the wrong one: a clear error.
    with pytest.raises(CheckpointError, match="shares no tensor"):
        init_from_checkpoint(torch.nn.Linear(3, 3), str(tmp_path / "src.pt"))


@pytest.mark.slow
def test_time_boxed_finetune_with_the_s4_economy(tmp_path, s4_root, capsys):
    """train.init + encoder_grad=labelled + warm-up under --max-minutes: a real run that
    starts from a checkpoint, trains, validates and keeps both checkpoints."""
    first = tmp_path / "first"
    assert train_main(["--config", TINY, "--data-root", str(s4_root), "--task", "s4", "--out",
                       str(first), "train.epochs=1", *FAST]) == 0
    capsys.readouterr()
    out = tmp_path / "tuned"
    assert train_main(["--config", TINY, "--data-root", str(s4_root), "--task", "s4", "--out",
                       str(out), "--max-minutes", "5", "train.epochs=2",
                       f"train.init={first / 'best.pt'}", "train.encoder_grad=labelled",
                       "train.warmup_steps=2", "train.min_lr_ratio=0.1", *FAST]) == 0
    text = capsys.readouterr().out
    assert "initialised" in text and str(first / "best.pt") in text
    records = [json.loads(x) for x in text.splitlines() if x.startswith('{"epoch"')]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == 2 * 4
    assert all(math.isfinite(r["loss"]) and 0.0 <= r["val_miou"] <= 1.0 for r in records)
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert "encoder_grad: labelled" in (out / "config.yaml").read_text()
