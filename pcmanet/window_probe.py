"""Can a checkpoint's backbone *learn* an S4 set's object kinds from windows around the objects?

``python -m pcmanet.window_probe --checkpoint C --data-root D [--steps 600] [--batch 32]
[--every 100] [--seed 0] [--save PATH] [--json]``

:mod:`pcmanet.visual_probe` asks whether the features already name the kinds (a linear fit on
frozen, mask-averaged features). This asks whether they can be taught fast: a copy of the
backbone plus a linear head is fine-tuned to name the kind of each training object from a window
cut around it (:func:`pcmanet.kind_loss.object_windows`: turned, mirrored, colour channels
swapped), and the kind of every labelled test object is scored from its window every ``--every``
steps. On the pitch family the demo backbone reaches about 0.9 within a few hundred steps, while
the 15-minute segmentation fine-tune on the same 150 clips picks the right object in under half
of the test frames: the kinds are learnable; what fails is the binding the segmentation run
learns (docs/training.md, "Round four").

Shapes: windows (N, 3, H/2, W/2) from frames (N, 3, H, W) and masks (N, 1, H, W).
"""

from __future__ import annotations

import copy
import json
import sys
import time

import torch
from torch import Tensor

from pcmanet.checkpoint import CheckpointError, save_checkpoint
from pcmanet.cli import Parser
from pcmanet.kind_loss import (
    KindHead,
    backbone_channels,
    fit_windows,
    labelled_objects,
    object_windows,
)
from pcmanet.visual_probe import load_splits


def window_probe(backbone: torch.nn.Module, train: tuple[Tensor, Tensor, list[str]],
                 test: tuple[Tensor, Tensor, list[str]], *, steps: int = 600, batch: int = 32,
                 every: int = 100, lr: float = 5e-4, seed: int = 0,
                 ) -> tuple[list[dict[str, float]], torch.nn.Module]:
    """Fine-tune a copy of ``backbone`` with a linear kind head on training windows; -> (one
    record per ``every`` steps: step, seconds, training loss, test accuracy (test windows are
    cut the same way, with the seeded random turns); the fine-tuned copy)."""
    net = copy.deepcopy(backbone)
    head = KindHead(backbone_channels(net), sorted(set(train[2])))
    yb = torch.tensor([head.index.get(c, -1) for c in test[2]])
    test_windows = object_windows(test[0], test[1], torch.Generator().manual_seed(seed + 1))
    records: list[dict[str, float]] = []
    t0 = time.perf_counter()

    def score(step: int, loss: Tensor) -> None:
        net.eval()
        with torch.no_grad():
            pred = torch.cat([head(net(w)).argmax(1) for w in test_windows.split(64)])
        records.append({"step": step, "seconds": time.perf_counter() - t0,
                        "loss": float(loss), "test_acc": float((pred == yb).float().mean())})

    fit_windows(net, head, train, steps=steps, batch=batch, lr=lr,
                generator=torch.Generator().manual_seed(seed), every=every, report=score)
    return records, net


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m pcmanet.window_probe",
               description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, metavar="PATH",
                   help="write the checkpoint with the fine-tuned backbone here (e.g. to start "
                        "a segmentation run from it with train.init=PATH)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if min(args.steps, args.batch, args.every) < 1:
        print("error: --steps, --batch and --every must be >= 1", file=sys.stderr)
        return 2
    from pcmanet.data import DataError

    torch.manual_seed(args.seed)
    try:
        model, cfg, extra, train_set, test_set = load_splits(args.checkpoint, args.data_root,
                                                             args.image_size)
        train, test = labelled_objects(train_set), labelled_objects(test_set)
    except (CheckpointError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    records, tuned = window_probe(model.backbone, train, test, steps=args.steps,
                                  batch=args.batch, every=args.every, seed=args.seed)
    if args.save:
        model.backbone = tuned
        save_checkpoint(args.save, model, cfg, extra={
            "window_probe": {"source": str(args.checkpoint), "steps": args.steps},
            **({"data": extra["data"]} if "data" in extra else {})})
    classes = len(set(train[2]))
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "classes": classes,
                          "train_objects": len(train[2]), "test_objects": len(test[2]),
                          "chance": 1 / classes, "records": records}))
    else:
        for r in records:
            print(f"step {r['step']:5d} ({r['seconds']:6.1f} s): loss {r['loss']:.3f}, "
                  f"test acc {r['test_acc']:.3f}")
        print(f"{classes} classes (chance {1 / classes:.3f}), {len(train[2])} training objects, "
              f"{len(test[2])} test objects")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
