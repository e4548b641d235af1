"""Evaluate a checkpoint on an AVSBench-layout split with AVSBench's metric conventions.

    python -m pcmanet.evaluate --checkpoint CKPT --data-root DIR --task s4|ms3|avss \
        --split test [--batch-size 1] [--json] [--save-masks DIR]
    python -m pcmanet.evaluate --official resnet50 --checkpoint REF.pth --vggish VGGISH.pth ...

S4/MS3: mIoU (`mask_iou`) and F-score (`f_score`, beta^2 = 0.3) per batch of `--batch-size`
clips in CSV order, averaged over batches like the official test loop; the F-score depends on
the batch size, which is printed with it. AVSS: per-class mIoU and F over the whole split.

When some labelled S4/MS3 frames have an empty ground truth (nothing audible in view: silent
or off-screen sound), AVSBench's mIoU scores them by the fraction of pixels predicted
background, which hides a small spurious mask. The result then also holds ``silent_area`` (mean
predicted mask area, as a fraction of the frame, over those frames), ``silent_empty`` (the
fraction of them predicted with no pixel at all), ``sounding_miou`` (per-frame mean IoU over
the frames with a non-empty ground truth) and the frame counts; for S4 also
``silent_area_by_category`` (synthetic sets: ``silence`` and ``off-screen``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pcmanet.checkpoint import CheckpointError, load_checkpoint
from pcmanet.cli import Parser, device_problem, fail
from pcmanet.metrics import AVSMeter, SemanticMeter, f_score, frame_ious, mask_area, mask_iou
from pcmanet.model import PCMANetOutput, keep_fraction


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m pcmanet.evaluate",
                                description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="our checkpoint, or a reference "
                   "checkpoint with --official")
    p.add_argument("--data-root", required=True)
    p.add_argument("--task", required=True, choices=["s4", "ms3", "avss"])
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--batch-size", type=int, default=1, help="clips per metric batch (the "
                   "F-score depends on it; PCMANet's test script uses 1)")
    p.add_argument("--official", choices=["resnet50", "pvt_v2_b5"], default=None,
                   help="the checkpoint is a reference PCMANet checkpoint of this backbone")
    p.add_argument("--vggish", default=None, help="VGGish weights (needed with --official)")
    p.add_argument("--image-size", type=int, default=None,
                   help="model input size (default: the size the checkpoint was trained at)")
    p.add_argument("--audio-source", choices=["wav", "pkl"], default="wav",
                   help="pkl reads the precomputed pickles: trusted data only")
    p.add_argument("--save-masks", default=None, help="write predicted masks as PNG here")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--device", default=None)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--max-items", type=int, default=None, help="evaluate only the first N clips")
    return p.parse_args(argv)


def argument_problem(args: argparse.Namespace) -> str | None:
    """The first flag whose value cannot work, as one line naming it and the fix; else None.
    Checked before the model loads, so nothing is read or written."""
    if args.batch_size < 1:
        return f"--batch-size {args.batch_size}: must be >= 1 clip"
    if args.num_workers < 0:
        return f"--num-workers {args.num_workers}: must be >= 0 (0: load in this process)"
    if args.max_items is not None and args.max_items < 1:
        return f"--max-items {args.max_items}: must be >= 1"
    if args.image_size is not None and (args.image_size < 32 or args.image_size % 32):
        return f"--image-size {args.image_size}: must be a multiple of 32, at least 32"
    if args.official and not args.vggish:
        return f"--official {args.official} needs --vggish VGGISH.pth (the audio encoder)"
    if not Path(args.checkpoint).is_file():
        return f"--checkpoint {args.checkpoint}: no such file"
    if not Path(args.data_root).is_dir():
        return f"--data-root {args.data_root}: no such folder"
    if args.save_masks and Path(args.save_masks).exists() and (
            not Path(args.save_masks).is_dir() or any(Path(args.save_masks).iterdir())):
        return f"--save-masks {args.save_masks}: exists and is not an empty folder; give a new one"
    if args.device is not None:
        return device_problem(args.device)
    return None


def _save_masks(out_dir: Path, names: list[str], logits: Tensor, T: int) -> None:
    """Predictions as <out>/<name>/<name>_<k>.png, k 0-based as the official save_mask."""
    if logits.shape[1] == 1:
        masks = (torch.sigmoid(logits[:, 0]) > 0.5).to(torch.uint8) * 255        # (N, H, W)
        palette = None
    else:
        from pcmanet.data import voc_palette

        masks = logits.argmax(1).to(torch.uint8)
        palette = voc_palette(logits.shape[1])
    for i, name in enumerate(names):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(T):
            img = Image.fromarray(masks[i * T + k].cpu().numpy(), mode="L" if palette is None
                                  else "P")
            if palette is not None:
                img.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
            img.save(folder / f"{name}_{k}.png")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a loader batch's tensors to `device`; strings stay as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
            for k, v in batch.items()}


def forward_batch(model: nn.Module, batch: dict[str, Any], targets: Tensor | None = None,
                  grad_rows: Tensor | None = None) -> PCMANetOutput:
    """A (B, T, ...) loader batch on the model's device -> the model's output (four stage
    logits (B*T, K, H, W), CIM masks). targets / grad_rows: as PCMANet.forward (training
    decodes, or back-propagates into, only some rows; then the logits have F rows)."""
    frames = batch["frames"].flatten(0, 1)                                  # (B*T, 3, H, W)
    audio = batch["audio"].flatten(0, 1)                                    # (B*T, 1, 96, 64)
    frame_mask = batch["frame_mask"].flatten()                              # (B*T,)
    flag = None if bool((frame_mask == 1).all()) else frame_mask            # AVSS padding
    return model(frames, audio, flag, targets=targets,  # type: ignore[no-any-return]
                 grad_rows=grad_rows)


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: Dataset[Any], batch_size: int,
                   device: torch.device, num_workers: int = 0, show_progress: bool = True,
                   save_masks: Path | None = None) -> dict[str, Any]:
    """Run the model over a split; returns the metrics dict (see the module docstring).

    The model runs at the dataset's frame size; its finest logits are compared with the masks
    at the masks' size (bilinear upsampling when they differ). For S4/MS3 only labelled frames
    (`mask_valid`) count, which is every frame of val/test.

    Also reported: ``keep_ratio`` (token-weighted fraction of visual tokens selected as queries
    by CIM, mean over batches) and ``ms_per_clip`` (model forward time per clip, median over
    batches; the device is synchronised for it on CUDA); with empty-GT frames, the silence
    figures of the module docstring (:func:`silence_summary`).
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    binary_meter, semantic_meter = AVSMeter(), None
    n_videos = n_frames = 0
    keeps: list[float] = []
    times_ms: list[float] = []
    silent_areas: dict[str, list[float]] = {}                               # by category
    sounding_ious: list[float] = []
    for batch in tqdm(loader, desc="evaluate", disable=not show_progress, leave=False):
        batch = to_device(batch, device)
        t0 = time.perf_counter()
        out = forward_batch(model, batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times_ms.append((time.perf_counter() - t0) * 1e3 / batch["frames"].shape[0])
        keeps.append(float(keep_fraction(out)))
        logits = out.logits[0].float()                                      # (B*T, K, H, W)
        masks = batch["masks"].flatten(0, 1)
        if tuple(logits.shape[-2:]) != tuple(masks.shape[-2:]):
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear",
                                   align_corners=False)
        B, T = batch["frames"].shape[:2]
        n_videos += B
        if save_masks is not None:
            _save_masks(save_masks, list(batch["name"]), logits.cpu(), T)
        if logits.shape[1] == 1:
            rows = batch["mask_valid"].flatten().nonzero().squeeze(1)
            pred, gt = logits[rows, 0], masks[rows, 0]                      # (N, H, W)
            binary_meter.add(mask_iou(pred, gt), f_score(pred, gt), n_videos=B,
                             n_frames=len(rows))
            n_frames += len(rows)
            empty = (gt.flatten(1) == 0).all(1)                             # (N,)
            sounding_ious += frame_ious(pred[~empty], gt[~empty]).tolist()
            categories = [batch["category"][int(r) // T] for r in rows[empty]]
            for category, area in zip(categories, mask_area(pred[empty]).tolist(), strict=True):
                silent_areas.setdefault(category, []).append(area)
        else:
            if semantic_meter is None:
                semantic_meter = SemanticMeter(logits.shape[1])
            semantic_meter.update(logits, masks)                            # every frame, as
            n_frames += B * T                                               # avss/test.py
    result: dict[str, Any] = {"n_videos": n_videos, "n_frames": n_frames,
                              "batch_size": batch_size,
                              "keep_ratio": float(np.mean(keeps)) if keeps else float("nan"),
                              "ms_per_clip": float(np.median(times_ms)) if times_ms
                              else float("nan")}
    if semantic_meter is not None:
        result.update(miou=semantic_meter.miou, fscore=semantic_meter.fscore,
                      miou_no_last=semantic_meter.miou_no_bg,
                      fscore_no_last=semantic_meter.fscore_no_bg)
    else:
        result.update(miou=binary_meter.miou, fscore=binary_meter.fscore)
        result.update(silence_summary(silent_areas, sounding_ious))
    return result


def silence_summary(silent_areas: dict[str, list[float]], sounding_ious: list[float]
                    ) -> dict[str, Any]:
    """Silence figures from the predicted areas of the empty-GT frames (by clip category) and
    the IoUs of the other frames; {} when no frame has an empty GT."""
    areas = [a for values in silent_areas.values() for a in values]
    if not areas:
        return {}
    summary: dict[str, Any] = {
        "silent_frames": len(areas), "silent_area": float(np.mean(areas)),
        "silent_empty": float(np.mean([a == 0 for a in areas])),
        "sounding_frames": len(sounding_ious),
        "sounding_miou": float(np.mean(sounding_ious)) if sounding_ious else float("nan")}
    if set(silent_areas) != {""}:                                            # MS3: no categories
        summary["silent_area_by_category"] = {c: float(np.mean(v))
                                              for c, v in sorted(silent_areas.items())}
    return summary


def load_for_eval(args: argparse.Namespace) -> tuple[nn.Module, int | None]:
    """The model to evaluate and the input size it was trained at (None: file size)."""
    if args.official:
        from pcmanet.official import load_official

        if args.vggish is None:
            raise CheckpointError("reference checkpoints take VGGish embeddings: pass --vggish "
                                  "PATH (the torchvggish vggish-10086976.pth file)")
        return load_official(args.checkpoint, args.official, args.task, vggish=args.vggish), 224
    model, _cfg, extra = load_checkpoint(args.checkpoint)
    return model, extra.get("data", {}).get("image_size")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = argument_problem(args)
    if problem is not None:
        return fail(problem)
    from pcmanet.data import DataError, build_dataset

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model, trained_size = load_for_eval(args)
        size = args.image_size if args.image_size is not None else trained_size
        dataset = build_dataset(args.task, args.data_root, args.split,
                                audio_source=args.audio_source, image_size=size,
                                max_items=args.max_items)
        result = evaluate_model(model.to(device), dataset, args.batch_size, device,
                                args.num_workers, show_progress=not args.json,
                                save_masks=Path(args.save_masks) if args.save_masks else None)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.update(task=args.task, split=args.split, checkpoint=str(args.checkpoint))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.task} {args.split}: mIoU {result['miou']:.4f}  F-score {result['fscore']:.4f}"
              f"  ({result['n_videos']} videos, {result['n_frames']} frames, "
              f"batch size {result['batch_size']})")
        if "silent_area" in result:
            print(f"{result['silent_frames']} frames with nothing audible in view: mean "
                  f"predicted area {100 * result['silent_area']:.2f} % of the frame, "
                  f"{100 * result['silent_empty']:.1f} % of them empty; "
                  f"{result['sounding_frames']} sounding frames: mIoU "
                  f"{result['sounding_miou']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
