"""Sweep the CIM threshold on a labelled set and recommend one (writes a live config fragment).

    python -m calib.threshold --data-root DIR --task s4 [--split val] [--weights CKPT]
        [--thresholds 0.6,0.8,0.9,0.95,0.99,0.995] [--max-miou-drop 0.005 | --target-ms MS]
        [--out configs/local/threshold.yaml] [--json FILE] [--max-items N]

DIR holds data in the AVSBench layout (``Single-source/``, ``Multi-sources/``: the real data set
or one written by ``python -m pcmanet.data.synthetic``). For every threshold the model runs over
the split as ``pcmanet.evaluate`` does and the tool reports mIoU, F-score, the keep ratio
(fraction of visual tokens CIM selects as queries: the work QSCA does) and the model time per
clip. A higher threshold marks more tokens uncertain, so more queries are computed.

Recommendation: with ``--target-ms``, the most accurate threshold whose time per clip is within
it; otherwise the cheapest (lowest keep ratio) whose mIoU is within ``--max-miou-drop`` of the
best. ``--out`` writes ``live: {engine: {cim_threshold: X}}`` for ``run_live.py --config``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from calib.fragment import output_problem, write_fragment
from pcmanet.checkpoint import CheckpointError
from pcmanet.cli import Parser, device_problem, fail
from pcmanet.model import PCMANet

DEFAULT_THRESHOLDS = (0.6, 0.8, 0.9, 0.95, 0.99, 0.995)


@dataclass(frozen=True)
class Setting:
    """One threshold's measurement on the split."""

    threshold: float
    miou: float
    fscore: float
    keep_ratio: float
    ms_per_clip: float


def parse_thresholds(text: str) -> list[float]:
    """"0.8,0.9" -> [0.8, 0.9]; each must lie in (0.5, 1) like live.engine.cim_threshold."""
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--thresholds {text!r}: use numbers separated by "
                                         "commas, e.g. 0.8,0.9,0.99") from None
    bad = [v for v in values if not 0.5 < v < 1]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"--thresholds: each must lie in (0.5, 1), got "
                                         f"{bad or text!r}")
    return values


def recommend(settings: list[Setting], max_miou_drop: float = 0.005,
              target_ms: float | None = None) -> Setting:
    """The recommended setting (see the module docstring); ValueError if none qualifies."""
    if not settings:
        raise ValueError("no settings measured")
    if target_ms is not None:
        fast = [s for s in settings if s.ms_per_clip <= target_ms]
        if not fast:
            best = min(settings, key=lambda s: s.ms_per_clip)
            raise ValueError(f"no threshold runs within {target_ms:g} ms per clip (fastest: "
                             f"{best.threshold:g} at {best.ms_per_clip:.1f} ms); raise "
                             "--target-ms or try lower thresholds")
        return max(fast, key=lambda s: (s.miou, -s.ms_per_clip))
    top = max(s.miou for s in settings)
    good = [s for s in settings if s.miou >= top - max_miou_drop]
    return min(good, key=lambda s: (s.keep_ratio, s.ms_per_clip, -s.miou))


def sweep(model: PCMANet, dataset: Any, thresholds: list[float],
          device: torch.device, show_progress: bool = True) -> list[Setting]:
    """Evaluate ``model`` on ``dataset`` once per CIM threshold (the model's own is restored),
    after an untimed warm-up pass over a few clips so the first setting is not timed cold."""
    from pcmanet.evaluate import evaluate_model

    own = model.threshold
    rows = []
    try:
        warm = torch.utils.data.Subset(dataset, range(min(4, len(dataset))))
        evaluate_model(model, warm, 1, device, num_workers=0, show_progress=False)  # untimed
        for th in thresholds:
            model.threshold = th
            r = evaluate_model(model, dataset, 1, device, num_workers=0,
                               show_progress=show_progress)
            rows.append(Setting(th, float(r["miou"]), float(r["fscore"]),
                                float(r["keep_ratio"]), float(r["ms_per_clip"])))
    finally:
        model.threshold = own
    return rows


def format_table(rows: list[Setting], chosen: Setting | None) -> str:
    lines = [f"{'threshold':>9} {'mIoU':>7} {'F':>7} {'keep':>7} {'ms/clip':>8}"]
    for s in rows:
        mark = "  <- recommended" if chosen is not None and s == chosen else ""
        lines.append(f"{s.threshold:>9g} {s.miou:>7.4f} {s.fscore:>7.4f} {s.keep_ratio:>7.3f} "
                     f"{s.ms_per_clip:>8.1f}{mark}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m calib.threshold",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data-root", required=True, help="folder in the AVSBench layout")
    p.add_argument("--task", default="s4", choices=["s4", "ms3", "avss"])
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--weights", help="our checkpoint (default: the demo model)")
    p.add_argument("--thresholds", type=parse_thresholds, default=list(DEFAULT_THRESHOLDS),
                   help="comma-separated CIM thresholds in (0.5, 1)")
    p.add_argument("--max-miou-drop", type=float, default=0.005,
                   help="accept this much less mIoU than the best for fewer queries")
    p.add_argument("--target-ms", type=float, help="instead: most accurate within MS per clip")
    p.add_argument("--max-items", type=int, help="only the first N clips of the split")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, help="write the live config fragment here")
    p.add_argument("--json", type=Path, help="write every setting and the choice as JSON")
    return p.parse_args(argv)


def argument_problem(args: argparse.Namespace) -> str | None:
    """The first flag that cannot work, before the model loads; else None."""
    if not Path(args.data_root).is_dir():
        return f"--data-root {args.data_root}: no such folder"
    if args.weights and not Path(args.weights).is_file():
        return f"--weights {args.weights}: no such file"
    if args.max_items is not None and args.max_items < 1:
        return f"--max-items {args.max_items}: must be >= 1"
    if args.threads is not None and args.threads < 1:
        return f"--threads {args.threads}: must be >= 1"
    if not 0 <= args.max_miou_drop < 1:
        return f"--max-miou-drop {args.max_miou_drop:g}: must be in [0, 1)"
    if args.target_ms is not None and not 0 < args.target_ms < float("inf"):
        return f"--target-ms {args.target_ms:g}: must be > 0"
    return output_problem(args.out, args.json) or device_problem(args.device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = argument_problem(args)
    if problem is not None:
        return fail(problem)
    from pcmanet.assets import DEMO_CHECKPOINT
    from pcmanet.checkpoint import load_checkpoint
    from pcmanet.data import DataError, build_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = Path(args.weights) if args.weights else DEMO_CHECKPOINT
    device = torch.device(args.device)
    try:
        model, _cfg, extra = load_checkpoint(weights)
        size = extra.get("data", {}).get("image_size")
        dataset = build_dataset(args.task, args.data_root, args.split, image_size=size,
                                max_items=args.max_items)
        clips = len(dataset)  # type: ignore[arg-type]
        if clips == 0:
            raise DataError(f"{args.data_root}: the {args.split} split has no clips")
        rows = sweep(model.to(device).eval(), dataset, args.thresholds, device,
                     show_progress=sys.stderr.isatty())
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        chosen: Setting | None = recommend(rows, args.max_miou_drop, args.target_ms)
    except ValueError as e:
        chosen = None
        problem = str(e)
    print(f"{weights.name} on {args.data_root} {args.task} {args.split} "
          f"({clips} clips, {args.device}, own threshold {model.threshold:g}):")
    print(format_table(rows, chosen))
    if args.json:
        args.json.write_text(json.dumps({
            "settings": [asdict(s) for s in rows], "recommended": asdict(chosen) if chosen
            else None, "weights": str(weights), "data_root": str(args.data_root),
            "task": args.task, "split": args.split, "clips": clips}, indent=1) + "\n")
    if chosen is None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"recommended: cim_threshold {chosen.threshold:g} (mIoU {chosen.miou:.4f}, "
          f"keep ratio {chosen.keep_ratio:.3f}, {chosen.ms_per_clip:.1f} ms per clip)")
    if args.out:
        how = (f"most accurate within {args.target_ms:g} ms per clip" if args.target_ms
               else f"fewest queries within {args.max_miou_drop:g} mIoU of the best")
        note = [f"{weights.name} on {args.data_root} {args.task} {args.split}, "
                f"{clips} clips: {how}",
                f"mIoU {chosen.miou:.4f}, F {chosen.fscore:.4f}, keep ratio "
                f"{chosen.keep_ratio:.3f}, {chosen.ms_per_clip:.1f} ms per clip"]
        path = write_fragment(args.out, {"engine": {"cim_threshold": chosen.threshold}},
                              "calib.threshold", note)
        print(f"wrote {path} (run_live.py --config {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
