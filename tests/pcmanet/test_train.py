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
from tests.conftest import REPO, synthetic_s4

TINY = str(REPO / "configs" / "test_tiny.yaml")
FAST = ["data.image_size=64", "data.num_workers=0", "train.lr=2e-3", "train.batch_size=4"]


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory):
    return synthetic_s4(tmp_path_factory, "syn", train=16, val=4, test=4, size=64, seed=1)


def _history(capsys):
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return lines


@pytest.fixture(scope="module")
def s4_small(tmp_path_factory):
    """4 training clips: 2 steps of 2 clips per epoch, so a fake-clock run stays cheap."""
    return synthetic_s4(tmp_path_factory, "syn_small", train=4, val=2, test=2, size=64, seed=2)


class StepClock:
    """A fake monotonic clock for train.main: each training step costs `step_s` seconds and
    each validation `val_s` seconds, whatever the machine's load. Validation returns the
    scripted mIoU values in turn (the training steps themselves are real)."""

    def __init__(self, monkeypatch, step_s: float, val_s: float, scores: list[float]) -> None:
        import pcmanet.train as train_mod

        self.now, self.val_times = 0.0, []
        scores_left = iter(scores)
        real_forward = train_mod.train_forward

        def forward(*args, **kwargs):
            out = real_forward(*args, **kwargs)
            self.now += step_s
            return out

        def validate(trainer):
            self.val_times.append((self.now, trainer.step))
            self.now += val_s
            return next(scores_left)

        monkeypatch.setattr(train_mod, "train_forward", forward)
        monkeypatch.setattr(train_mod.Trainer, "validate", validate)

    def __call__(self) -> float:
        return self.now


SMALL = ["data.image_size=64", "data.num_workers=0", "train.lr=1e-3", "train.batch_size=2",
         "train.min_lr_ratio=0.1"]


def _run(argv, clock, capsys):
    """train.main under the fake clock: (exit code, epoch records, summary)."""
    code = train_main(argv, clock=clock)
    lines = _history(capsys)
    return code, [r for r in lines if "loss" in r], lines[-1] if lines else None


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
    # No epoch limit and no deadline: the run would never end.
    code = train_main(["--config", TINY, "--data-root", str(s4_root), "--task", "s4",
                       "--out", str(tmp_path / "r"), "train.epochs=null"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: train.epochs: null") and "--max-minutes" in err
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
    from pcmanet.schedule import lr_scale

    # Constant lr at min_ratio 1, apart from the warm-up ramp.
    assert [lr_scale(s, 100, 0.0, 1.0, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    # Cosine over the steps: 1 at the start, the midpoint halfway, min_ratio at the end.
    assert lr_scale(0, 100, 0.0, 0.0, 0) == 1.0
    assert lr_scale(50, 100, 0.0, 0.0, 0) == pytest.approx(0.5)
    assert lr_scale(100, 100, 0.0, 0.1, 0) == pytest.approx(0.1)
    # A time budget that runs out before the steps do ends the decay at the deadline.
    assert lr_scale(10, 1000, 0.5, 0.0, 0) == pytest.approx(0.5)
    assert lr_scale(10, 1000, 1.7, 0.02, 0) == pytest.approx(0.02)
    # No epoch limit (total_steps None): the time alone drives the decay.
    assert lr_scale(10_000, None, 0.0, 0.1, 0) == 1.0
    assert lr_scale(10_000, None, 0.5, 0.0, 0) == pytest.approx(0.5)
    assert lr_scale(3, None, 1.0, 0.02, 0) == pytest.approx(0.02)


def test_validation_waits_so_it_takes_at_most_its_share():
    from pcmanet.schedule import next_validation_after

    # A 2 s validation ending at t=10 with share 0.1 waits 18 s: 2 of every 20 s.
    assert next_validation_after(10.0, 2.0, 0.1) == pytest.approx(28.0)
    assert next_validation_after(10.0, 2.0, 1.0) == 10.0          # share 1: no wait


def test_init_copies_matching_weights_and_refuses_a_foreign_file(tmp_path, tiny_cfg):
    from dataclasses import replace

    import torch

    from pcmanet.build import build_pcmanet
    from pcmanet.checkpoint import CheckpointError, init_from_checkpoint, save_checkpoint

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


@pytest.mark.slow
def test_budget_without_epoch_limit_trains_to_the_deadline(tmp_path, s4_small, capsys,
                                                            monkeypatch):
    """train.epochs=null + --max-minutes: training runs until the deadline, the lr decay ends
    there, validation follows the val_share schedule plus once at the end, and best.pt is the
    validation with the highest mIoU."""
    from pcmanet.schedule import lr_scale

    # Steps of 1 s, validations of 1.75 s; share 0.25 -> wait 3 * 1.75 = 5.25 s after each.
    # Budget 12 s. Epochs (2 steps) end at 2 | val to 3.75, next from 9 | 5.75, 7.75 (too
    # early) | 9.75 val to 11.5 | then step 9 ends at 12.5 >= 12: the deadline, mid-epoch,
    # and the final validation.
    clock = StepClock(monkeypatch, step_s=1.0, val_s=1.75, scores=[0.3, 0.7, 0.5])
    out = tmp_path / "run"
    code, records, summary = _run(
        ["--config", TINY, "--data-root", str(s4_small), "--task", "s4", "--out", str(out),
         "--max-minutes", "0.2", "train.epochs=null", "train.val_share=0.25", *SMALL],
        clock, capsys)
    assert code == 0
    assert clock.val_times == [(2.0, 2), (9.75, 8), (12.5, 9)]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 4]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 9]
    assert [math.isnan(r["val_miou"]) for r in records] == [False, True, True, False, False]
    assert summary["steps"] == 9 and summary["epochs"] == 4
    assert summary["validations"] == 3 and summary["val_seconds"] == pytest.approx(5.25)
    assert summary["run_seconds"] == pytest.approx(14.25)
    assert summary["val_fraction"] == pytest.approx(5.25 / 14.25)
    # The lr of the last step (started at 11.5 of 12 s) is within 0.5 % of the cosine's end.
    lr0, min_ratio = 1e-3, 0.1
    assert records[-1]["lr"] == pytest.approx(lr0 * lr_scale(8, None, 11.5 / 12, min_ratio, 0))
    assert 0 < records[-1]["lr"] - lr0 * min_ratio < 5e-3 * lr0 * (1 - min_ratio)
    assert records[0]["lr"] > 0.9 * lr0
    # best.pt holds the 0.7 validation (step 8), last.pt the end.
    _model, _cfg, best = load_checkpoint(out / "best.pt")
    assert best["val_miou"] == 0.7 and best["step"] == 8
    assert summary["best_miou"] == 0.7 and summary["best_step"] == 8
    _model, _cfg, last = load_checkpoint(out / "last.pt")
    assert last["step"] == 9 and last["run_seconds"] == pytest.approx(14.25)


@pytest.mark.slow
def test_explicit_epochs_end_a_budgeted_run_first(tmp_path, s4_small, capsys, monkeypatch):
    """train.epochs=2 under a 60 s budget: 2 epochs (4 steps), the decay follows the steps."""
    from pcmanet.schedule import lr_scale

    clock = StepClock(monkeypatch, step_s=1.0, val_s=0.5, scores=[0.2, 0.4])
    code, records, summary = _run(
        ["--config", TINY, "--data-root", str(s4_small), "--task", "s4", "--out",
         str(tmp_path / "run"), "--max-minutes", "1", "train.epochs=2", *SMALL], clock, capsys)
    assert code == 0 and summary["epochs"] == 2 and summary["steps"] == 4
    assert clock.val_times == [(2.0, 2), (4.5, 4)]               # val_share 1: every epoch
    assert records[-1]["lr"] == pytest.approx(1e-3 * lr_scale(3, 4, 3.5 / 60, 0.1, 0))


@pytest.mark.slow
def test_resume_continues_the_budget_and_its_schedule(tmp_path, s4_small, capsys, monkeypatch):
    """--max-minutes is the run's total: a resumed run goes on from the time already spent
    (lr where it left off, validation schedule kept) and one whose budget is spent stops."""
    from pcmanet.schedule import lr_scale

    out = tmp_path / "run"
    argv = ["--config", TINY, "--data-root", str(s4_small), "--task", "s4", "--out", str(out),
            "train.epochs=null", "train.val_share=0.25", *SMALL]
    # 6 s budget: epoch ends at 2 | val to 3.75 (next from 9) | 5.75 | step 5 ends at 6.75,
    # the deadline, mid-epoch: validation to 8.5 (next from 13.75).
    clock = StepClock(monkeypatch, step_s=1.0, val_s=1.75, scores=[0.3, 0.4, 0.35])
    code, _records, summary = _run([*argv, "--max-minutes", "0.1"], clock, capsys)
    assert code == 0 and summary["steps"] == 5 and summary["epochs"] == 2
    assert clock.val_times == [(2.0, 2), (6.75, 5)]
    # Extended to 12 s in a new process whose clock starts elsewhere: epoch 3 (restarted)
    # ends at 10.5 of run time, too early to validate; epoch 4 ends at 12.5, the deadline.
    clock.now = 1000.0
    clock.val_times.clear()
    code, records, summary = _run([*argv, "--resume", "--max-minutes", "0.2"], clock, capsys)
    assert code == 0
    assert [(r["epoch"], r["step"]) for r in records] == [(3, 7), (4, 9)]
    assert clock.val_times == [(1000.0 + 12.5 - 8.5, 9)]
    assert records[0]["lr"] == pytest.approx(1e-3 * lr_scale(6, None, 9.5 / 12, 0.1, 0))
    assert summary["run_seconds"] == pytest.approx(14.25) and summary["validations"] == 3
    assert summary["best_miou"] == 0.4 and summary["best_step"] == 5
    # The same budget again: already spent, nothing to train.
    code, records, summary = _run([*argv, "--resume", "--max-minutes", "0.2"], clock, capsys)
    assert code == 0 and records == [] and summary["steps"] == 9


def _binary_batch(valid: list[list[float]]) -> dict:
    import torch

    B, T = len(valid), len(valid[0])
    return {"mask_valid": torch.tensor(valid), "masks": torch.zeros(B, T, 1, 4, 4)}


def test_decode_frames_draws_k_labelled_frames_of_each_clip():
    """train.decode_frames=k: k distinct labelled rows of every clip, drawn anew each step;
    S4 train clips (one labelled frame) and k >= T leave the selection as it was."""
    import torch

    from pcmanet.train_step import decoded_rows

    ms3 = _binary_batch([[1.0] * 5] * 3)
    draws = set()
    for seed in range(6):
        torch.manual_seed(seed)
        rows = decoded_rows(ms3, 2)
        assert rows is not None and len(rows) == 6
        for b in range(3):
            mine = rows[2 * b:2 * b + 2].tolist()
            assert len(set(mine)) == 2 and all(5 * b <= r < 5 * b + 5 for r in mine)
        draws.add(tuple(rows.tolist()))
    assert len(draws) > 1
    assert decoded_rows(ms3, None) is None and decoded_rows(ms3, 5) is None
    s4 = _binary_batch([[1.0, 0, 0, 0, 0]] * 2)
    assert decoded_rows(s4, 2).tolist() == [0, 5]


def test_ms3_run_with_decode_frames(tmp_path, capsys):
    """A real MS3 training run decoding 2 of the 5 labelled frames per clip and step."""
    from pcmanet.data.synthetic import main as synth_main

    root = tmp_path / "ms3"
    assert synth_main(["--out", str(root), "--task", "ms3", "--train", "4", "--val", "2",
                       "--test", "1", "--size", "64", "--seed", "3", "--quiet"]) == 0
    out = tmp_path / "run"
    assert train_main(["--config", TINY, "--data-root", str(root), "--task", "ms3", "--out",
                       str(out), "train.epochs=2", "train.decode_frames=2",
                       "train.encoder_grad=labelled", "data.cache=true", *FAST]) == 0
    records = [r for r in _history(capsys) if "epoch" in r]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and 0.0 <= r["val_miou"] <= 1.0 for r in records)
    assert "decode_frames: 2" in (out / "config.yaml").read_text()
    assert (out / "best.pt").is_file()


def test_ema_keeps_the_average_in_best_and_resumes(tmp_path, s4_root, capsys):
    """train.ema: validation and best.pt use the weight average (not the last weights);
    last.pt keeps both, and --resume continues the average rather than restarting it."""
    import torch

    from pcmanet.weights_file import read_weights_file

    out = tmp_path / "ema"
    args = ["--config", TINY, "--data-root", str(s4_root), "--task", "s4", "--out", str(out),
            "train.ema=0.5", *FAST]
    assert train_main([*args, "train.epochs=1"]) == 0
    last, best = read_weights_file(out / "last.pt"), read_weights_file(out / "best.pt")
    assert "ema" in last and "ema" not in best
    name = next(k for k, v in best["state_dict"].items() if v.is_floating_point() and v.numel() > 8)
    assert torch.equal(best["state_dict"][name], last["ema"][f"module.{name}"])
    assert not torch.equal(best["state_dict"][name], last["state_dict"][name])
    n_before = int(last["ema"]["n_averaged"])
    assert n_before == 4  # one update per step: 16 clips / 4 per batch
    capsys.readouterr()
    assert train_main([*args, "train.epochs=2", "--resume"]) == 0
    assert int(read_weights_file(out / "last.pt")["ema"]["n_averaged"]) == 2 * n_before
