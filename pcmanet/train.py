"""Train PCMANet on AVSBench-layout data (real or synthetic).

    python -m pcmanet.train --config configs/NAME.yaml --data-root DIR --task s4|ms3|avss \
        --out RUN_DIR [--resume] [--max-minutes M] [key=value ...]

DIR holds `Single-source/` and `Multi-sources/` (S4, MS3) or is the AVSS root. Writes
RUN_DIR/config.yaml (the resolved config), RUN_DIR/last.pt (every epoch, with the optimizer
state for --resume) and RUN_DIR/best.pt (best validation mIoU), both in our checkpoint format.
Under `torchrun --nproc_per_node N` it trains data-parallel (DistributedDataParallel; gloo on
CPU, NCCL on CUDA); only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from pcmanet.build import build_pcmanet
from pcmanet.checkpoint import CheckpointError, read_weights_file, save_checkpoint
from pcmanet.config import (
    ConfigError,
    RunConfig,
    config_to_dict,
    dump_config,
    load_config,
)
from pcmanet.evaluate import evaluate_model, forward_batch, to_device
from pcmanet.losses import bce_iou_loss, semantic_stage_loss
from pcmanet.model import PCMANet


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pcmanet.train",
                                description="Train PCMANet on AVSBench-layout data.")
    p.add_argument("--config", required=True, help="YAML config (configs/NAME.yaml)")
    p.add_argument("--data-root", required=True, help="folder holding Single-source/ and "
                   "Multi-sources/ (S4, MS3), or the AVSS root")
    p.add_argument("--task", required=True, choices=["s4", "ms3", "avss"])
    p.add_argument("--out", required=True, help="run directory for config and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop cleanly after this many minutes of training (checkpoints kept)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=5")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------
# distributed helpers


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _mean_across(value: float, world: int) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world


# ------------------------------------------------------------------------------------------
# one step


def clip_loss(model_out: list[Tensor], batch: dict[str, Any], weights: tuple[float, ...]
              ) -> Tensor:
    """Multi-stage loss on the labelled frames (`mask_valid`): BCE + soft-IoU or masked CE."""
    masks, valid = batch["masks"], batch["mask_valid"].flatten()            # (B, T, ...), (B*T,)
    if masks.dtype == torch.int64:                                          # AVSS labels
        labels = masks.flatten(0, 1)                                        # (B*T, H, W)
        return semantic_stage_loss(model_out, labels, valid, weights)
    target = masks.flatten(0, 1)                                            # (B*T, 1, H, W)
    rows = valid.nonzero().squeeze(1)                                       # labelled frames
    return sum((w * bce_iou_loss(x.index_select(0, rows), target.index_select(0, rows))
                for w, x in zip(weights, model_out, strict=True)), torch.zeros(()))


# ------------------------------------------------------------------------------------------
# the run


class Trainer:
    """Owns model, optimizer, loaders and checkpoints of one run (one process)."""

    def __init__(self, cfg: RunConfig, task: str, data_root: str, out: Path,
                 device: torch.device, rank: int, world: int) -> None:
        from pcmanet.data import build_dataset

        self.cfg, self.task, self.out, self.device = cfg, task, out, device
        self.rank, self.world = rank, world
        torch.manual_seed(cfg.train.seed + rank)
        d = cfg.data
        self.train_set: Dataset[Any] = build_dataset(
            task, data_root, "train", audio_source=d.audio_source, image_size=d.image_size,
            augment=d.augment)
        self.val_set: Dataset[Any] = build_dataset(
            task, data_root, "val", audio_source=d.audio_source, image_size=d.image_size)
        num_frames = self.train_set.num_frames  # type: ignore[attr-defined]
        if num_frames != cfg.model.num_frames:
            raise ConfigError(f"model.num_frames={cfg.model.num_frames} but {task} clips have "
                              f"{num_frames} frames; set model.num_frames={num_frames}")
        self.model: PCMANet = build_pcmanet(cfg.model).to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.train.lr,
                                          weight_decay=cfg.train.weight_decay)
        self.sampler: DistributedSampler[Any] | None = None
        if world > 1:
            self.sampler = DistributedSampler(self.train_set, world, rank, shuffle=True,
                                              seed=cfg.train.seed)
        gen = torch.Generator().manual_seed(cfg.train.seed)
        self.loader = DataLoader(
            self.train_set, batch_size=cfg.train.batch_size, shuffle=self.sampler is None,
            sampler=self.sampler, num_workers=d.num_workers,
            drop_last=len(self.train_set) > cfg.train.batch_size * world,  # type: ignore[arg-type]
            generator=gen, pin_memory=device.type == "cuda",
            persistent_workers=d.num_workers > 0)
        self.net: nn.Module = self.model
        if world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=not cfg.model.query_grad)
        self.epoch, self.step, self.best = 0, 0, -math.inf
        self.train_seconds = 0.0
        self.history: list[dict[str, float]] = []

    # -- checkpoints -------------------------------------------------------------------------
    def _extra(self, miou: float | None) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "best_miou": self.best,
                "val_miou": miou, "task": self.task, "train_seconds": self.train_seconds,
                "data": config_to_dict(self.cfg.data), "train": config_to_dict(self.cfg.train)}

    def save(self, name: str, miou: float | None) -> None:
        if self.rank != 0:
            return
        save_checkpoint(self.out / name, self.model, self.cfg.model, extra=self._extra(miou),
                        optimizer=self.optimizer.state_dict() if name == "last.pt" else None)

    def resume(self) -> None:
        path = self.out / "last.pt"
        obj = read_weights_file(path)
        try:
            self.model.load_state_dict(obj["state_dict"])
            self.optimizer.load_state_dict(obj["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot resume from it ({e})") from None
        extra = obj.get("extra", {})
        self.epoch, self.step = int(extra["epoch"]), int(extra["step"])
        self.best = float(extra.get("best_miou", -math.inf))
        self.train_seconds = float(extra.get("train_seconds", 0.0))
        self._log(f"resumed from {path} at epoch {self.epoch}, step {self.step}")

    def _log(self, text: str) -> None:
        if self.rank == 0:
            tqdm.write(text)

    # -- loop ----------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda" and self.cfg.train.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batches(self) -> Iterator[dict[str, Any]]:
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
                   disable=self.rank != 0, leave=False, dynamic_ncols=True)
        for batch in bar:
            yield batch
            bar.set_postfix(loss=f"{self._last_loss:.3f}")

    def train_epoch(self, deadline: float | None) -> bool:
        """One epoch; False if the time budget ran out inside it."""
        self.net.train()
        self._last_loss, total, n = 0.0, 0.0, 0
        for batch in self._batches():
            start = time.monotonic()
            batch = to_device(batch, self.device)
            with self._autocast():
                logits = forward_batch(self.net, batch).logits
            loss = clip_loss([x.float() for x in logits], batch, self.cfg.train.stage_weights)
            self._set_lr()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.train.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
            self.optimizer.step()
            self.step += 1
            self._last_loss = float(loss.detach())
            total, n = total + self._last_loss, n + 1
            self.train_seconds += time.monotonic() - start
            if deadline is not None and self._out_of_time(deadline):
                self._epoch_loss = total / max(n, 1)
                return False
        self._epoch_loss = total / max(n, 1)
        return True

    def _set_lr(self) -> None:
        """Cosine from train.lr to lr*min_lr_ratio over the run's steps (constant at ratio 1)."""
        t = self.cfg.train
        total = max(1, t.epochs * len(self.loader))
        progress = min(1.0, self.step / total)
        scale = t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in self.optimizer.param_groups:
            group["lr"] = t.lr * scale

    def _out_of_time(self, deadline: float) -> bool:
        late = 1.0 if time.monotonic() >= deadline else 0.0
        return _mean_across(late, self.world) > 0          # every rank stops at the same step

    def validate(self) -> float:
        metrics = evaluate_model(self.model, self.val_set, self.cfg.train.val_batch_size,
                                 self.device, self.cfg.data.num_workers, show_progress=False)
        return float(metrics["miou"])

    def run(self, max_minutes: float | None) -> dict[str, Any]:
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
        while self.epoch < self.cfg.train.epochs:
            finished = self.train_epoch(deadline)
            self.epoch += int(finished)
            last_epoch = self.epoch == self.cfg.train.epochs
            miou = None
            if self.rank == 0 and (not finished or last_epoch
                                   or self.epoch % self.cfg.train.val_every == 0):
                miou = self.validate()
                if miou > self.best:
                    self.best = miou
                    self.save("best.pt", miou)
            record = {"epoch": self.epoch, "step": self.step, "loss": self._epoch_loss,
                      "val_miou": miou if miou is not None else float("nan"),
                      "train_seconds": round(self.train_seconds, 1)}
            self.history.append(record)
            self._log(json.dumps(record))
            self.save("last.pt", miou)
            if self.world > 1:
                dist.barrier()
            if not finished:
                self._log(f"stopped after {max_minutes} min of training, checkpoints kept")
                break
        return {"best_miou": self.best, "epochs": self.epoch, "steps": self.step,
                "train_seconds": self.train_seconds, "run_dir": str(self.out)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.resume and (out / "config.yaml").is_file():
        # The run's own config wins over the file given now, except for the overrides.
        cfg = load_config(out / "config.yaml", overrides)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    from pcmanet.data import DataError

    try:
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(dump_config(cfg))
        trainer = Trainer(cfg, args.task, args.data_root, out, device, rank, world)
        if args.resume:
            trainer.resume()
        summary = trainer.run(cfg.train.max_minutes)
    except (ConfigError, CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

