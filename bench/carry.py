"""CIM carry-over vs the plain per-frame selection, on the demo scene (docs/design.md 5).

    python bench/carry.py [--seconds 20] [--fps 15] [--seed 7] [--refresh 8] [--threads 2]

Runs the shipped demo model in streaming mode over the scene twice (plain selection, carry-over)
and reports per frame: query tokens computed (keep ratio of stages 3-1), step time, and mean
IoU with the object really sounding (frames 1.1 s or more into a sounding segment).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from calib.scene_eval import iou, scene_frames
from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import load_checkpoint
from pcmanet.data.synthetic_demo import DemoScene
from stream.engine.engine import CarryConfig, StreamingEngine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--refresh", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, _, extra = load_checkpoint(DEMO_CHECKPOINT)
    size = extra["data"]["image_size"]
    scene = DemoScene(seed=args.seed, size=224, fps=args.fps)
    engines = {"plain": StreamingEngine(model, size),
               "carry": StreamingEngine(model, size, carry=CarryConfig(
                   enabled=True, refresh_every=args.refresh))}
    stats: dict[str, dict[str, list[float]]] = {k: {"keep": [], "ms": [], "iou": []}
                                                for k in engines}
    for f in scene_frames(scene, range(round(args.seconds * args.fps))):
        for name, eng in engines.items():
            t0 = time.perf_counter()
            r = eng.step(f.paired)
            st = stats[name]
            st["ms"].append((time.perf_counter() - t0) * 1e3)
            st["keep"].append(r.keep_ratio)
            if f.settled:
                st["iou"].append(iou(r.prob > 0.5, f.truth))
    for name, st in stats.items():
        print(f"{name:6s} keep ratio {np.mean(st['keep']):.3f}  step median "
              f"{np.median(st['ms']):.1f} ms  mean IoU {np.mean(st['iou']):.3f} "
              f"({len(st['iou'])} settled frames)")


if __name__ == "__main__":
    main()
