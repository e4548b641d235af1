"""Does the model use the audio? Swap another clip's audio in over the same frames.

    python -m pcmanet.swap_eval --checkpoint CKPT --data-root DIR [--split test] [--json]

Works on synthetic data sets (`python -m pcmanet.data.synthetic`), whose
`synthetic_meta.json` groups clips that share one scene render with different sounding
objects. For every ordered pair (A, B) of clips of a group, the model sees A's frames with B's
audio; the prediction is scored (AVSBench `mask_iou`, per frame) against B's masks, i.e. the
object that the swapped-in audio makes sound, and against A's masks, the object it no longer
hears. A model that ignores audio scores the same on both; one that listens follows B.
Silent and off-screen clips (``--silent-fraction`` / ``--offscreen-fraction``: no object in
view sounds) take no part, so the figure means the same on sets with and without them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pcmanet.checkpoint import CheckpointError, load_checkpoint
from pcmanet.cli import Parser
from pcmanet.data.synthetic_plan import TASK_FOLDERS
from pcmanet.metrics import mask_iou


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m pcmanet.swap_eval",
                                description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--task", choices=sorted(TASK_FOLDERS), default="s4")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def swap_pairs(meta: dict[str, Any], split: str) -> list[tuple[str, str]]:
    """Ordered (A, B) name pairs of clips sharing a scene and differing in what sounds (silent
    and off-screen clips, marked by an ``"audio"`` entry, left out)."""
    pairs = []
    for group in meta["groups"]:
        if group["split"] != split:
            continue
        clips = [c for c in group["clips"] if "audio" not in c]
        pairs += [(a["name"], b["name"]) for a in clips for b in clips
                  if a["name"] != b["name"] and a["sounding"] != b["sounding"]]
    return pairs


@torch.no_grad()
def items_named(dataset: Any, names: set[str] | Mapping[str, Any]) -> dict[str, Any]:
    """The data set's items whose clip name is in ``names``, by name (each read once)."""
    items = {}
    for i in range(len(dataset)):
        item = dataset[i]
        if item["name"] in names:
            items[item["name"]] = item
    return items


def swap_scores(model: torch.nn.Module, items: Mapping[str, Mapping[str, Any]],
                pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Mean per-frame IoU of the swapped prediction with B's masks and with A's masks."""
    model.eval()
    with_new: list[float] = []
    with_old: list[float] = []
    frames_equal = 0
    for a, b in pairs:
        A, B = items[a], items[b]
        frames_equal += int(torch.equal(A["frames"], B["frames"]))
        logits = model(A["frames"], B["audio"]).logits[0][:, 0]              # (T, H, W)
        for target, out in ((B["masks"][:, 0], with_new), (A["masks"][:, 0], with_old)):
            out += [float(mask_iou(logits[t:t + 1], target[t:t + 1]))
                    for t in range(logits.shape[0])]
    n = max(len(with_new), 1)
    return {"pairs": len(pairs), "frames": len(with_new),
            "iou_with_new_sounding_object": sum(with_new) / n,
            "iou_with_previous_object": sum(with_old) / n,
            "pairs_with_identical_frames": frames_equal}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pcmanet.data import DataError, build_dataset

    meta_path = Path(args.data_root) / TASK_FOLDERS[args.task] / "synthetic_meta.json"
    try:
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: not found; the swap test needs a synthetic data set "
                            "(python -m pcmanet.data.synthetic)")
        meta = json.loads(meta_path.read_text())
        model, _cfg, extra = load_checkpoint(args.checkpoint)
        size = args.image_size or extra.get("data", {}).get("image_size")
        dataset = build_dataset(args.task, args.data_root, args.split, image_size=size)
        pairs = swap_pairs(meta, args.split)
        needed = {n for pair in pairs for n in pair}
        result: dict[str, Any] = dict(swap_scores(model, items_named(dataset, needed), pairs))
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.update(checkpoint=str(args.checkpoint), split=args.split, task=args.task)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['pairs']} swaps over {result['frames']} frames: IoU with the newly "
              f"sounding object {result['iou_with_new_sounding_object']:.4f}, with the "
              f"previous one {result['iou_with_previous_object']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
