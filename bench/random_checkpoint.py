"""Write a randomly initialised model of a config as a checkpoint in our format, for timing.

    python bench/random_checkpoint.py configs/resnet50_s4.yaml /tmp/resnet50_s4_random.pt
    python -m stream.bench --weights /tmp/resnet50_s4_random.pt --compare --duration 40

Random weights give the reference variants' exact cost (shapes, FLOPs) without their trained
weights, which cannot be downloaded here. The backbone and audio encoder are built without
pretrained weights whatever the config says; the input size is the config's data.image_size.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from pcmanet.build import build_pcmanet, count_parameters  # noqa: E402
from pcmanet.checkpoint import save_checkpoint  # noqa: E402
from pcmanet.config import load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    model_cfg = replace(cfg.model, backbone=replace(cfg.model.backbone, weights=None),
                        audio=replace(cfg.model.audio, weights=None))
    torch.manual_seed(args.seed)
    model = build_pcmanet(model_cfg).eval()
    save_checkpoint(args.out, model, model_cfg,
                    extra={"data": {"image_size": cfg.data.image_size},
                           "note": "random initialisation, for timing only"})
    print(f"wrote {args.out}: {model_cfg.name}, {count_parameters(model):,} parameters, "
          f"input {cfg.data.image_size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
