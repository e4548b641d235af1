"""Twin scores: on clips whose twin shares its frames, does the model paint its own sounding
object or the twin's?

    python -m pcmanet.twin_eval --checkpoint CKPT --data-root DIR [--split test] [--json]

(``--split train`` scores the training scenes, first frames only: set against the test split
it tells a binding learnt in general from one learnt per training scene.)

Twins come from ``Single-source/family_meta.json`` (``python -m pcmanet.data.eval_families``)
or, for our synthetic S4 sets, ``synthetic_meta.json`` (clips of one scene render with
different sounding objects). For every clip with a twin, the model sees the clip's own frames
and audio; each labelled frame's prediction is scored (AVSBench ``mask_iou``) against the
clip's mask ("own") and against the twin's mask ("twin": the other object, same frames).
A frame *chooses* its own object when its IoU with it is above 0.5, the twin's when that IoU
is, and neither otherwise; ``chosen`` counts these per sounding class: a per-class confusion of
which object the audio made the model pick. ``area_ratio`` is the median predicted area over
the own object's area.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcmanet.checkpoint import CheckpointError, load_checkpoint
from pcmanet.cli import Parser
from pcmanet.metrics import mask_iou
from pcmanet.swap_eval import items_named


def twin_pairs(root: Path, split: str) -> dict[str, str]:
    """{clip: its twin} of ``split`` from family_meta.json or synthetic_meta.json (S4)."""
    folder = root / "Single-source"
    fam = folder / "family_meta.json"
    if fam.is_file():
        meta = json.loads(fam.read_text())
        return {c["name"]: c["twin"] for c in meta["clips"]
                if c["split"] == split and c["twin"] is not None}
    meta = json.loads((folder / "synthetic_meta.json").read_text())
    out: dict[str, str] = {}
    for g in meta["groups"]:
        clips = [c for c in g["clips"] if "audio" not in c and c["sounding"]]
        if g["split"] == split and len(clips) == 2:
            out[clips[0]["name"]], out[clips[1]["name"]] = clips[1]["name"], clips[0]["name"]
    return out


@torch.no_grad()
def twin_scores(model: torch.nn.Module, items: Mapping[str, Mapping[str, Any]],
                twins: Mapping[str, str]) -> dict[str, Any]:
    """Per labelled frame of every clip with a twin: IoU with its own and its twin's mask
    -> {"clips", "frames", "iou_own", "iou_twin", "area_ratio", "chosen": {class: {own, twin,
    neither}}}."""
    model.eval()
    own: list[float] = []
    twin: list[float] = []
    ratios: list[float] = []
    chosen: dict[str, dict[str, int]] = {}
    for name, other in twins.items():
        A, B = items[name], items[other]
        logits = model(A["frames"], A["audio"]).logits[0][:, 0]                 # (T, H, W)
        counts = chosen.setdefault(A["category"], {"own": 0, "twin": 0, "neither": 0})
        for t in range(logits.shape[0]):
            if A["mask_valid"][t] < 1 or B["mask_valid"][t] < 1:
                continue
            io = float(mask_iou(logits[t:t + 1], A["masks"][t:t + 1, 0]))
            it = float(mask_iou(logits[t:t + 1], B["masks"][t:t + 1, 0]))
            own.append(io)
            twin.append(it)
            counts["own" if io > 0.5 else "twin" if it > 0.5 else "neither"] += 1
            area = float(A["masks"][t].sum())
            if area > 0:
                ratios.append(float((torch.sigmoid(logits[t]) > 0.5).sum()) / area)
    n = max(len(own), 1)
    return {"clips": len(twins), "frames": len(own), "iou_own": sum(own) / n,
            "iou_twin": sum(twin) / n,
            "area_ratio": float(np.median(ratios)) if ratios else float("nan"),
            "chosen": dict(sorted(chosen.items()))}


def load_twins(checkpoint: str, data_root: str, split: str, image_size: int | None = None
               ) -> tuple[torch.nn.Module, dict[str, Any], dict[str, str]]:
    """A checkpoint's model, the split's twin clips' items by name and {clip: twin}; the
    items at ``image_size`` or the checkpoint's training size."""
    from pcmanet.data import build_dataset

    twins = twin_pairs(Path(data_root), split)
    model, _cfg, extra = load_checkpoint(checkpoint)
    size = image_size or extra.get("data", {}).get("image_size")
    dataset = build_dataset("s4", data_root, split, image_size=size)
    return model, items_named(dataset, twins), twins


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m pcmanet.twin_eval",
               description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="train: the first frame of each clip only (the labelled one)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from pcmanet.data import DataError

    try:
        model, items, twins = load_twins(args.checkpoint, args.data_root, args.split,
                                         args.image_size)
        result: dict[str, Any] = twin_scores(model, items, twins)
    except (CheckpointError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    emit(result, args, lambda r: f"{r['clips']} twin clips, {r['frames']} frames: IoU with "
         f"the own object {r['iou_own']:.4f}, with the twin's {r['iou_twin']:.4f}, area ratio "
         f"{r['area_ratio']:.2f}; chosen {r['chosen']}")
    return 0


def emit(result: dict[str, Any], args: Any, line: Callable[[dict[str, Any]], str]) -> None:
    """Print a twin-clip CLI's result (with its checkpoint and split) as one JSON line
    (``--json``) or as ``line(result)``."""
    result.update(checkpoint=str(args.checkpoint), split=args.split)
    print(json.dumps(result) if args.json else line(result))


if __name__ == "__main__":
    raise SystemExit(main())
