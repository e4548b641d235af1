"""Train PCMANet on AVSBench-layout data (real or synthetic).

    python -m pcmanet.train --config configs/NAME.yaml --data-root DIR --task s4|ms3|avss \
        --out RUN_DIR [--resume] [--max-minutes M] [key=value ...]

DIR holds `Single-source/` and `Multi-sources/` (S4, MS3) or is the AVSS root. Writes
RUN_DIR/config.yaml (the resolved config), RUN_DIR/last.pt (every epoch, with the optimizer
state for --resume) and RUN_DIR/best.pt (best validation mIoU), both in our checkpoint format.

The run ends after train.epochs epochs or at the --max-minutes deadline (train.max_minutes,
the run's wall time including validation, kept across --resume), whichever comes first;
train.epochs=null trains until the deadline. The cosine lr decay ends at that same end.
Validation runs every train.val_every epochs but, while train.val_share < 1, only once it can
have taken no more than that share of the time since the previous one; the run always
validates at its end. The final JSON line reports how much of the time validation took.
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
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from pcmanet.build import build_pcmanet
from pcmanet.checkpoint import (
    CheckpointError,
    init_from_checkpoint,
    read_weights_file,
    save_checkpoint,
)
from pcmanet.cli import Parser, device_problem, fail
from pcmanet.config import (
    ConfigError,
    RunConfig,
    config_to_dict,
    dump_config,
    load_config,
)
from pcmanet.distributed import init_distributed, mean_across
from pcmanet.ema import WeightAverage
from pcmanet.evaluate import evaluate_model, to_device
from pcmanet.kind_gate import clip_sounds, fit_sounds
from pcmanet.kind_loss import KindHead, backbone_channels, fit_windows, labelled_objects
from pcmanet.model import PCMANet
from pcmanet.sampling import BlockShuffleSampler
from pcmanet.schedule import lr_scale, next_validation_after, require_an_end
from pcmanet.train_step import WINDOW_JITTER, clip_loss, gate_loss, train_forward

# Steps between host reads of the loss: each read waits for the device, so a GPU is not fed
# while the host waits.
LOSS_SYNC_EVERY = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m pcmanet.train",
                                description="Train PCMANet on AVSBench-layout data.")
    p.add_argument("--config", required=True, help="YAML config (configs/NAME.yaml)")
    p.add_argument("--data-root", required=True, help="folder holding Single-source/ and "
                   "Multi-sources/ (S4, MS3), or the AVSS root")
    p.add_argument("--task", required=True, choices=["s4", "ms3", "avss"])
    p.add_argument("--out", required=True, help="run directory for config and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-time budget of the run in minutes: it trains until then (unless "
                   "train.epochs ends it first), the lr decay ends then, checkpoints are kept")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=5")
    return p.parse_args(argv)


def argument_problem(args: argparse.Namespace, out: Path) -> str | None:
    """The first flag whose value cannot work, as one line naming it and the fix; else None.
    Checked before anything is loaded or written."""
    if not Path(args.config).is_file():
        return f"--config {args.config}: no such file"
    if not Path(args.data_root).is_dir():
        return f"--data-root {args.data_root}: no such folder"
    if args.max_minutes is not None and not 0 < args.max_minutes < math.inf:
        return f"--max-minutes {args.max_minutes:g}: must be > 0"
    if out.exists() and not out.is_dir():
        return f"--out {out}: exists and is not a folder"
    if args.resume and not (out / "last.pt").is_file():
        return f"--resume: {out / 'last.pt'} not found; drop --resume to start a new run there"
    if args.device is not None:
        return device_problem(args.device)
    return None


# ------------------------------------------------------------------------------------------
# the run


AUDIO_PARTS = ("audio_encoder.", "audio_proj.")


def param_groups(model: nn.Module, audio_lr_scale: float) -> list[dict[str, Any]]:
    """The trainable parameters as Adam groups: the audio parts (:data:`AUDIO_PARTS`) with
    ``lr_scale`` = audio_lr_scale, the rest with 1 (one group when the scale is 1)."""
    audio: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (audio if name.startswith(AUDIO_PARTS) else rest).append(p)
    if audio_lr_scale == 1.0 or not audio:
        return [{"params": audio + rest, "lr_scale": 1.0}]
    return [{"params": rest, "lr_scale": 1.0}, {"params": audio, "lr_scale": audio_lr_scale}]


def clip_groups(model: PCMANet) -> list[list[nn.Parameter]]:
    """Parameter groups whose gradients train.grad_clip clips apart: the model's; with a kind
    gate, its window backbone and head, and its audio head (with its own audio encoder) and
    scale. One norm over all would let the mask loss shrink the gate's small kind losses, and
    the window backbone's gradient shrink the audio head's (rhythm, 15 min: the audio head
    then named 0.55 of the test clips' sounds, where alone it learns them all in 700
    steps)."""
    gate = model.gate
    if gate is None:
        return [list(model.parameters())]
    seen = [*gate.backbone.parameters(), *gate.head.parameters()]
    heard = [*gate.audio.parameters(), gate.scale,
             *(gate.audio_encoder.parameters() if gate.audio_encoder is not None else [])]
    ours = {id(p) for p in [*seen, *heard]}
    return [[p for p in model.parameters() if id(p) not in ours], seen, heard]


class Trainer:
    """Owns model, optimizer, loaders and checkpoints of one run (one process).

    clock: seconds, monotonic; the run's time budget, lr schedule and validation schedule
    read only this clock (tests inject a fake one).
    """

    def __init__(self, cfg: RunConfig, task: str, data_root: str, out: Path,
                 device: torch.device, rank: int, world: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from pcmanet.data import build_dataset
        from pcmanet.data.paste import ObjectPaste
        from pcmanet.data.transforms import ClipAugment

        require_an_end(cfg.train)
        self.clock = clock
        self.cfg, self.task, self.out, self.device = cfg, task, out, device
        self.rank, self.world = rank, world
        torch.manual_seed(cfg.train.seed + rank)
        d = cfg.data
        if d.cache and task == "avss":
            raise ConfigError("data.cache: the decoded-clip cache is for s4 and ms3; set "
                              "data.cache=false for avss")
        paste = {"paste": ObjectPaste(prob=d.paste, max_objects=d.paste_objects, hue_p=d.hue,
                                      same_p=d.paste_same)} if d.paste > 0 and task == "s4" else {}
        augment = ClipAugment(hue_p=d.hue) if d.augment else False
        self.train_set: Dataset[Any] = build_dataset(
            task, data_root, "train", audio_source=d.audio_source, image_size=d.image_size,
            augment=augment, cache=d.cache, **paste)
        self.val_set: Dataset[Any] = build_dataset(
            task, data_root, "val", audio_source=d.audio_source, image_size=d.image_size,
            cache=d.cache)
        num_frames = self.train_set.num_frames  # type: ignore[attr-defined]
        if num_frames != cfg.model.num_frames:
            raise ConfigError(f"model.num_frames={cfg.model.num_frames} but {task} clips have "
                              f"{num_frames} frames; set model.num_frames={num_frames}")
        if cfg.model.kind_gate:
            cfg = self.cfg = self._with_kinds(cfg, task)
        self.model: PCMANet = build_pcmanet(cfg.model)
        if cfg.train.init is not None:
            self._log(init_from_checkpoint(self.model, cfg.train.init))
        self.model = self.model.to(device)
        if self.amp and cfg.train.channels_last:  # bf16 convolutions prefer NHWC on a GPU
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.ema = (WeightAverage(self.model, cfg.train.ema) if cfg.train.ema is not None
                    else None)
        self._clip_groups = clip_groups(self.model)
        self.kind = self._kind_head(cfg.train.kind_loss, task, world)
        groups = param_groups(self.model, cfg.train.audio_lr_scale)
        if self.kind is not None:
            groups.append({"params": list(self.kind.parameters()), "lr_scale": 1.0})
        self.optimizer = torch.optim.Adam(groups, lr=cfg.train.lr,
                                          weight_decay=cfg.train.weight_decay)
        self.sampler: DistributedSampler[Any] | None = None
        if world > 1:
            self.sampler = DistributedSampler(self.train_set, world, rank, shuffle=True,
                                              seed=cfg.train.seed)
        gen = torch.Generator().manual_seed(cfg.train.seed)
        order: Sampler[int] | None = self.sampler
        if order is None and cfg.train.shuffle_block > 1:
            order = BlockShuffleSampler(len(self.train_set),  # type: ignore[arg-type]
                                        cfg.train.shuffle_block, gen)
        self.loader = DataLoader(
            self.train_set, batch_size=cfg.train.batch_size, shuffle=order is None,
            sampler=order, num_workers=d.num_workers,
            drop_last=len(self.train_set) > cfg.train.batch_size * world,  # type: ignore[arg-type]
            generator=gen, pin_memory=device.type == "cuda",
            persistent_workers=d.num_workers > 0)
        self.net: nn.Module = self.model
        if world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=not cfg.model.query_grad)
        self.epoch, self.step, self.best, self.best_step = 0, 0, -math.inf, -1
        self.train_seconds = 0.0        # optimizer steps only
        self.run_seconds = 0.0          # run wall time, all sessions: what the budget counts
        self.val_seconds, self.validations = 0.0, 0
        self.val_after = 0.0            # run time before which no scheduled validation starts
        self.val_step = 0               # step of the latest validation
        self._budget: float | None = None                       # seconds of --max-minutes
        self._t0: float | None = None   # clock() at run time 0, once run() started
        self.history: list[dict[str, float]] = []

    def _with_kinds(self, cfg: RunConfig, task: str) -> RunConfig:
        """The config with ``model.kinds`` filled from the train split's categories (kept if
        given; then every category must be among them)."""
        if task != "s4":
            raise ConfigError(f"model.kind_gate learns from each clip's S4 category; {task} clips "
                              "have none: set model.kind_gate=false")
        found = sorted({c.category for c in self.train_set.clips})  # type: ignore[attr-defined]
        if cfg.model.kinds:
            unknown = sorted(set(found) - set(cfg.model.kinds))
            if unknown:
                raise ConfigError(f"model.kinds lacks the train split's categories "
                                  f"{', '.join(unknown[:5])}: add them, or set model.kinds=[] "
                                  "to take the train split's")
            return cfg
        if len(found) < 2:
            raise ConfigError(f"model.kind_gate needs >= 2 categories in the train split, found "
                              f"{found}: set model.kind_gate=false")
        return replace(cfg, model=replace(cfg.model, kinds=tuple(found)))

    def _kind_head(self, weight: float, task: str, world: int) -> KindHead | None:
        """The object-kind head of ``train.kind_loss`` (None when it is 0)."""
        if weight == 0:
            return None
        if task != "s4":
            raise ConfigError(f"train.kind_loss names each clip's S4 category; {task} clips have "
                              "none: set train.kind_loss=0")
        if world > 1:
            raise ConfigError("train.kind_loss: the kind head is not synchronised across "
                              "processes yet; train in one process or set train.kind_loss=0")
        classes = sorted({c.category for c in self.train_set.clips})  # type: ignore[attr-defined]
        head = KindHead(backbone_channels(self.model.backbone), classes)
        return head.to(self.device)

    # -- checkpoints -------------------------------------------------------------------------
    def _extra(self, miou: float | None) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "best_miou": self.best,
                "best_step": self.best_step, "val_miou": miou, "task": self.task,
                "train_seconds": self.train_seconds, "run_seconds": self.run_time(),
                "val_seconds": self.val_seconds, "validations": self.validations,
                "val_after": self.val_after, "val_step": self.val_step,
                "data": config_to_dict(self.cfg.data), "train": config_to_dict(self.cfg.train)}

    @property
    def kept_model(self) -> nn.Module:
        """What validation scores and best.pt keeps: the weight average, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def save(self, name: str, miou: float | None) -> None:
        if self.rank != 0:
            return
        if name == "last.pt":  # the trained weights, for resuming, with their average
            extra = self._extra(miou)
            if self.kind is not None:
                extra["kind_head"] = self.kind.state_dict()
            save_checkpoint(self.out / name, self.model, self.cfg.model, extra=extra,
                            optimizer=self.optimizer.state_dict(),
                            ema=self.ema.state_dict() if self.ema is not None else None)
        else:
            save_checkpoint(self.out / name, self.kept_model, self.cfg.model,
                            extra=self._extra(miou))

    def resume(self) -> None:
        path = self.out / "last.pt"
        obj = read_weights_file(path)
        try:
            self.model.load_state_dict(obj["state_dict"])
            if self.kind is not None:
                self.kind.load_state_dict(obj["extra"]["kind_head"])
            self.optimizer.load_state_dict(obj["optimizer"])
            if self.ema is not None and "ema" in obj:
                self.ema.load_state_dict(obj["ema"])
            elif self.ema is not None:  # a run without train.ema before: start it here
                self.ema = WeightAverage(self.model, self.ema.decay)
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot resume from it ({e})") from None
        extra = obj.get("extra", {}) if isinstance(obj, dict) else {}
        try:
            self.epoch, self.step = int(extra["epoch"]), int(extra["step"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{path}: cannot resume from it: it does not record the epoch and step it was "
                "saved at (not a last.pt written by pcmanet.train); drop --resume to start "
                "afresh") from None
        self.best = float(extra.get("best_miou", -math.inf))
        self.best_step = int(extra.get("best_step", -1))
        self.train_seconds = float(extra.get("train_seconds", 0.0))
        # Older checkpoints lack these: their run then starts a fresh budget.
        self.run_seconds = float(extra.get("run_seconds", 0.0))
        self.val_seconds = float(extra.get("val_seconds", 0.0))
        self.validations = int(extra.get("validations", 0))
        self.val_after = float(extra.get("val_after", 0.0))
        self.val_step = int(extra.get("val_step", self.step))
        self._log(f"resumed from {path} at epoch {self.epoch}, step {self.step}")

    def _log(self, text: str) -> None:
        if self.rank == 0:
            tqdm.write(text)

    # -- loop ----------------------------------------------------------------------------------
    @property
    def amp(self) -> bool:
        """bf16 autocast: on CUDA with ``train.amp``; on the CPU only with ``train.cpu_amp``."""
        t = self.cfg.train
        return t.amp and (self.device.type == "cuda" or t.cpu_amp)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batches(self) -> Iterator[dict[str, Any]]:
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        epochs = self.cfg.train.epochs
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}" + (f"/{epochs}" if epochs else ""),
                   disable=self.rank != 0, leave=False, dynamic_ncols=True)
        try:
            for batch in bar:
                yield batch
                bar.set_postfix(loss=f"{self._last_loss:.3f}")
        finally:
            bar.close()

    def train_epoch(self) -> bool:
        """One epoch; False if the time budget ran out before its last batch."""
        self.net.train()
        self._last_loss, total, n = 0.0, 0.0, 0
        running: torch.Tensor | None = None      # the epoch's loss sum, on the device
        finished = True
        for batch in self._batches():
            start = self.clock()
            self._set_lr()
            batch = to_device(batch, self.device)
            with self._autocast():
                out, rows = train_forward(self.net, batch, self.cfg.train.encoder_grad,
                                          self.cfg.train.decode_frames)
            loss = clip_loss([x.float() for x in out.logits], batch,
                             self.cfg.train.stage_weights, rows)
            if self.model.gate is not None and self.cfg.train.gate_loss > 0:
                loss = loss + self.cfg.train.gate_loss * gate_loss(self.model, out, batch,
                                                                   rows)
            if self.kind is not None:
                loss = loss + self.cfg.train.kind_loss * self._kind_loss(batch, rows)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.train.grad_clip is not None:  # the kind gate's on its own (its loss
                for params in self._clip_groups:        # must not shrink with the mask loss's)
                    nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
            running = loss.detach() if running is None else running + loss.detach()
            n += 1
            if n % LOSS_SYNC_EVERY == 0:  # the host reads the loss only now and then
                self._last_loss = (float(running) - total) / LOSS_SYNC_EVERY  # their mean
                total = float(running)
            self.train_seconds += self.clock() - start
            if self._out_of_time():
                finished = n == len(self.loader)
                break
        self._epoch_loss = (float(running) if running is not None else 0.0) / max(n, 1)
        return finished

    def warm_gate(self) -> None:
        """``train.gate_warmup`` steps of 32 windows for the kind gate's window backbone and
        head alone, on the train split's labelled objects (:func:`fit_windows`, jittered like
        the joint loss), and as many of 32 sounds for its own audio encoder and audio head
        (``model.gate_audio: own``), before the first joint step; inside the run's time
        budget. The joint run starts with a gate that already names most kinds, so its term
        helps from the first step instead of flooring the right object while the head is
        still guessing."""
        steps = self.cfg.train.gate_warmup
        gate = self.model.gate
        if steps == 0 or gate is None:
            return
        start = self.run_time()
        objects = labelled_objects(self.train_set)
        losses: list[float] = []
        fit_windows(gate.backbone, gate.head, objects, steps=steps, lr=self.cfg.train.lr,
                    jitter=WINDOW_JITTER, blank=gate.blank,
                    generator=torch.Generator().manual_seed(self.cfg.train.seed),
                    every=max(1, steps // 4),
                    report=lambda step, loss: losses.append(float(loss)))
        heard = None
        if gate.own_audio and gate.audio_encoder is not None:  # its own ears, likewise
            heard = fit_sounds(gate, clip_sounds(self.train_set), steps=steps,
                               lr=self.cfg.train.lr,
                               generator=torch.Generator().manual_seed(self.cfg.train.seed + 1))
        if self.world > 1:  # each process drew its own augmented objects: rank 0's gate wins
            for tensor in gate.state_dict().values():
                dist.broadcast(tensor, 0)
        if self.ema is not None:  # the average starts from the warmed gate
            self.ema = WeightAverage(self.model, self.ema.decay)
        self._log(json.dumps({"gate_warmup": steps, "objects": len(objects[2]),
                              "loss": [round(x, 3) for x in losses],
                              **({"audio_loss": round(heard, 3)} if heard is not None else {}),
                              "seconds": round(self.run_time() - start, 1)}))

    def _kind_loss(self, batch: dict[str, Any], rows: torch.Tensor | None) -> torch.Tensor:
        """The kind head's loss on windows around the decoded rows' objects (every labelled row
        when the step decoded all of them)."""
        assert self.kind is not None
        if rows is None:
            rows = batch["mask_valid"].flatten().nonzero().squeeze(1)
        return self.kind.loss(self.model.backbone, batch, rows)

    def run_time(self) -> float:
        """Seconds of this run so far, earlier sessions (--resume) included."""
        return self.run_seconds if self._t0 is None else self.clock() - self._t0

    def _set_lr(self) -> None:
        """Linear warm-up over train.warmup_steps, then cosine from train.lr to
        lr*min_lr_ratio (constant at ratio 1). Progress is the larger of steps done / the run's
        steps (none without an epoch limit) and, under --max-minutes, run time / the budget,
        so the decay ends at whichever end comes first."""
        t = self.cfg.train
        spent = 0.0
        if self._budget is not None:
            spent = mean_across(self.run_time() / self._budget, self.world)
        total = None if t.epochs is None else t.epochs * len(self.loader)
        scale = lr_scale(self.step, total, spent, t.min_lr_ratio, t.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = t.lr * scale * group.get("lr_scale", 1.0)

    def _out_of_time(self) -> bool:
        if self._budget is None:
            return False
        late = 1.0 if self.run_time() >= self._budget else 0.0
        return mean_across(late, self.world) > 0          # every rank stops at the same step

    def _epochs_done(self) -> bool:
        return self.cfg.train.epochs is not None and self.epoch >= self.cfg.train.epochs

    def _validation_due(self, finished: bool, done: bool) -> bool:
        """At the run's end always (if it trained since the last validation); otherwise at the
        end of every val_every-th epoch once the val_share wait has passed."""
        if self.step == self.val_step:
            return False
        if done:
            return True
        return (finished and self.epoch % self.cfg.train.val_every == 0
                and self.run_time() >= self.val_after)

    def validate(self) -> float:
        metrics = evaluate_model(self.kept_model, self.val_set, self.cfg.train.val_batch_size,
                                 self.device, self.cfg.data.num_workers, show_progress=False)
        return float(metrics["miou"])

    def _validate_and_keep_best(self) -> float:
        start = self.run_time()
        miou = self.validate()
        end = self.run_time()
        self.val_seconds += end - start
        self.validations += 1
        self.val_after = next_validation_after(end, end - start, self.cfg.train.val_share)
        self.val_step = self.step
        if miou > self.best:
            self.best, self.best_step = miou, self.step
            self.save("best.pt", miou)
        return miou

    def run(self, max_minutes: float | None) -> dict[str, Any]:
        """Train from the current state (fresh or resumed) to the run's end; the summary."""
        self._budget = 60 * max_minutes if max_minutes else None
        self._t0 = self.clock() - self.run_seconds
        done = self._epochs_done() or (self._budget is not None
                                       and self.run_seconds >= self._budget)
        if done:
            self._log(f"nothing to train: the run has done {self.epoch} epochs in "
                      f"{self.run_seconds / 60:.1f} min; raise train.epochs or --max-minutes "
                      "to continue")
        if not done and self.step == 0 and self.model.gate is not None:
            self.warm_gate()
        while not done:
            finished = self.train_epoch()
            self.epoch += int(finished)
            done = self._epochs_done() or self._out_of_time()
            miou = None
            if self.rank == 0 and self._validation_due(finished, done):
                miou = self._validate_and_keep_best()
            record = {"epoch": self.epoch, "step": self.step, "loss": self._epoch_loss,
                      "val_miou": miou if miou is not None else float("nan"),
                      "lr": self.optimizer.param_groups[0]["lr"],
                      "train_seconds": round(self.train_seconds, 1)}
            self.history.append(record)
            self._log(json.dumps(record))
            self.save("last.pt", miou)
            if self.world > 1:
                dist.barrier()
            if done and not self._epochs_done():
                self._log(f"stopped at the {max_minutes}-minute deadline, checkpoints kept")
        run_seconds = self.run_time()
        return {"best_miou": self.best, "best_step": self.best_step, "epochs": self.epoch,
                "steps": self.step, "train_seconds": self.train_seconds,
                "run_seconds": run_seconds, "validations": self.validations,
                "val_seconds": self.val_seconds,
                "val_fraction": self.val_seconds / run_seconds if run_seconds > 0 else 0.0,
                "run_dir": str(self.out)}


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.monotonic) -> int:
    """The command; `clock` times the budget and the schedules (tests pass a fake one)."""
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    out = Path(args.out)
    problem = argument_problem(args, out)
    if problem is not None:
        return fail(problem)
    try:
        cfg = load_config(args.config, overrides)
        if args.resume and (out / "config.yaml").is_file():
            # The run's own config wins over the file given now, except for the overrides.
            cfg = load_config(out / "config.yaml", overrides)
    except ConfigError as e:
        return fail(f"{e}; fix it or start a new run folder" if args.resume else str(e))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    from pcmanet.data import DataError

    try:
        trainer = Trainer(cfg, args.task, args.data_root, out, device, rank, world, clock)
        if args.resume:
            trainer.resume()
        if rank == 0:    # written once the data and the checkpoint have been read
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(dump_config(cfg))
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

