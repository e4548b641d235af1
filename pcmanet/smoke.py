"""Smoke run: the shipped demo model segments the synthetic live-demo scene (no files needed).

    python -m pcmanet.smoke [--checkpoint CKPT | --config CONFIG] [--seconds 30] [--threads 2]

For one frame per second of the scene (from t = 5 s on), builds the model's 5-frame window
(the newest frame and the frames 1, 2, 3, 4 s before it, each with the 0.96 s of audio ending
at its time), predicts the newest frame's mask with the live engine (`StreamingEngine`: the
feature ring, decode of the newest frame only), checks it against clip mode, and scores it
against the object that is really sounding. With `--config` instead of a checkpoint the model
has random weights (a plumbing check).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.build import build_pcmanet, count_parameters
from pcmanet.checkpoint import CheckpointError, load_checkpoint
from pcmanet.cli import Parser
from pcmanet.config import ConfigError, load_config
from pcmanet.data.synthetic_demo import DemoScene
from pcmanet.model import PCMANet


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m pcmanet.smoke",
                                description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT), help="our checkpoint")
    p.add_argument("--config", default=None, help="build this config with random weights")
    p.add_argument("--seconds", type=int, default=30, help="scene length to score (>= 5)")
    p.add_argument("--size", type=int, default=None, help="model input size (default: trained)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=7, help="demo scene seed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.config:
            run = load_config(args.config)
            cfg, size = run.model, args.size or run.data.image_size or 224
            torch.manual_seed(0)
            model: PCMANet = build_pcmanet(cfg).eval()
            name = f"{cfg.name} (random weights)"
        else:
            model, cfg, extra = load_checkpoint(args.checkpoint)
            size = args.size or extra.get("data", {}).get("image_size") or 224
            name = f"{cfg.name} ({args.checkpoint})"
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # The live engine on one frame per second: its window is then exactly the newest frame
    # and the frames 1..T-1 s before it (the oldest repeated in the first seconds).
    from calib.scene_eval import iou, scene_frames
    from stream.engine.engine import StreamingEngine

    T, fps = cfg.num_frames, 30
    scene = DemoScene(seed=args.seed, size=224, fps=fps)
    engine = StreamingEngine(model, size, keep_inputs=True, compile="off")
    ious, diffs, times = [], [], []
    for second, sf in enumerate(scene_frames(scene, [s * fps for s in
                                                     range(1, args.seconds + 1)]), start=1):
        start = time.perf_counter()
        result = engine.step(sf.paired)
        times.append((time.perf_counter() - start) * 1e3)
        if second < T:                                                  # no whole window yet
            continue
        if second == T:                                                 # streaming == clip mode
            diffs.append(float((engine.clip_logits() - result.logits).abs().max()))
        ious.append(iou(result.prob > 0.5, sf.truth))
        sounding = scene.frame(sf.paired.frame.index)[2]
        print(f"t={second:3d} s  sounding {sounding or '(silence)':18s} IoU {ious[-1]:.3f}")
    print(f"model {name}: {count_parameters(model):,} parameters, input {size}x{size}")
    print(f"mean IoU with the sounding object over {len(ious)} frames: {np.mean(ious):.3f}")
    print(f"streaming step (encode newest + decode): median {np.median(times):.1f} ms; "
          f"streaming vs clip mode max |logit diff| {max(diffs):.1e}")
    return 0 if max(diffs) < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
