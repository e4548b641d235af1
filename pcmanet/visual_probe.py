"""Visual linear probe: do a model's backbone features, pooled inside an object's mask, tell the
object's category?

    python -m pcmanet.visual_probe --checkpoint CKPT --data-root DIR [--json]

For every S4 training clip, its labelled frame's backbone features at each level are averaged
inside the clip's mask (the sounding object; resized by area to the level's grid), as is the
frame's RGB (the "mean RGB" row); a softmax regression per level is fitted on these (150
training clips -> 150 objects) and scored on every labelled frame of the test split. The
category names the object kind in our S4 sets. High test accuracy at some level: the features
already tell the kinds apart, and a fine-tune has only to bind sounds to them. Near chance
(1 / categories) at every level while the train accuracy is high: the features hold no
general cue of the kind, and a 150-clip fine-tune can only learn each training object.
Sound families draw colours at random, so their mean-RGB row sits at chance by design.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pcmanet.checkpoint import CheckpointError, load_checkpoint
from pcmanet.cli import Parser
from pcmanet.kind_loss import masked_mean
from pcmanet.model import PCMANet

FIT_STEPS = 500


@torch.no_grad()
def pooled_features(model: PCMANet, dataset: Any) -> tuple[list[Tensor], list[str]]:
    """Per labelled frame: mean backbone feature inside its mask at each level, and mean RGB
    -> ([(N, C_k) per level] + [(N, 3) RGB], N category names)."""
    model.eval()
    levels: list[list[Tensor]] = []
    names: list[str] = []
    for i in range(len(dataset)):
        item = dataset[i]
        rows = item["mask_valid"].nonzero().squeeze(1)
        frames, masks = item["frames"][rows], item["masks"][rows]             # (r, 3|1, H, W)
        pooled = []
        for f in [*model.backbone(frames), frames]:                            # levels + RGB
            pooled.append(masked_mean(f, masks))                               # (r, C)
        levels = levels or [[] for _ in pooled]
        for k, p in enumerate(pooled):
            levels[k].append(p)
        names += [dataset.clips[i].category] * len(rows)
    return [torch.cat(x) for x in levels], names


def probe(train: Tensor, train_names: list[str], test: Tensor, test_names: list[str],
          seed: int = 0) -> tuple[float, float]:
    """Softmax regression on standardised (N, C) features -> (train accuracy, test accuracy)."""
    classes = sorted(set(train_names))
    idx = {c: i for i, c in enumerate(classes)}
    mu, sd = train.mean(0), train.std(0) + 1e-6
    a, b = (train - mu) / sd, (test - mu) / sd
    ya = torch.tensor([idx[c] for c in train_names])
    yb = torch.tensor([idx.get(c, -1) for c in test_names])
    torch.manual_seed(seed)
    lin = torch.nn.Linear(a.shape[1], len(classes))
    opt = torch.optim.Adam(lin.parameters(), lr=0.01, weight_decay=1e-2)
    for _ in range(FIT_STEPS):
        opt.zero_grad()
        F.cross_entropy(lin(a), ya).backward()
        opt.step()
    with torch.no_grad():
        return (float((lin(a).argmax(1) == ya).float().mean()),
                float((lin(b).argmax(1) == yb).float().mean()))


def load_splits(checkpoint: str, data_root: str, image_size: int | None
                ) -> tuple[PCMANet, Any, dict[str, Any], Any, Any]:
    """The checkpoint and its S4 train and test splits at ``image_size`` (None: the size it was
    trained at) -> (model, model config, extra, train set, test set).

    Raises:
        CheckpointError, DataError, FileNotFoundError: as the loaders do.
    """
    from pcmanet.data import build_dataset

    model, cfg, extra = load_checkpoint(checkpoint)
    size = image_size or extra.get("data", {}).get("image_size")
    return (model, cfg, extra, build_dataset("s4", data_root, "train", image_size=size),
            build_dataset("s4", data_root, "test", image_size=size))


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m pcmanet.visual_probe",
               description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from pcmanet.data import DataError

    try:
        model, _, _, train_set, test_set = load_splits(args.checkpoint, args.data_root,
                                                       args.image_size)
        train, train_names = pooled_features(model, train_set)
        test, test_names = pooled_features(model, test_set)
    except (CheckpointError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for k, (a, b) in enumerate(zip(train, test, strict=True)):
        name = "mean RGB" if k == len(train) - 1 else f"level {k}"
        acc_train, acc_test = probe(a, train_names, b, test_names)
        rows.append({"features": name, "dim": a.shape[1], "train_acc": acc_train,
                     "test_acc": acc_test})
    result = {"checkpoint": str(args.checkpoint), "classes": len(set(train_names)),
              "train_objects": len(train_names), "test_frames": len(test_names),
              "chance": 1 / len(set(train_names)), "levels": rows}
    if args.json:
        print(json.dumps(result))
    else:
        for r in rows:
            print(f"{r['features']:>9} ({r['dim']:4d}-d): train acc {r['train_acc']:.3f}, "
                  f"test acc {r['test_acc']:.3f}")
        print(f"{result['classes']} classes (chance {result['chance']:.3f}), "
              f"{result['train_objects']} training objects, {result['test_frames']} test frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
