"""Smoke run of a model variant end to end on generated input (no files, no downloads).

    python -m pcmanet.smoke [--config configs/mobilenetv3_light.yaml] [--size 224] [--threads 2]

Builds the model from the config (random weights unless the config names local weight
files), turns a generated 5 s sound into VGGish log-mel examples, runs one clip in clip mode
and the newest frame in streaming mode, checks the two agree, and prints shapes and timings.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from pcmanet.audio import log_mel
from pcmanet.build import build_pcmanet, count_parameters
from pcmanet.config import ConfigError, load_config
from pcmanet.model import FrameFeatures

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mobilenetv3_light.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pcmanet.smoke", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="model config YAML")
    p.add_argument("--size", type=int, default=224, help="square input size in pixels")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("overrides", nargs="*", help="config overrides such as model.dim=128")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config, args.overrides).model
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = build_pcmanet(cfg).eval()
    T, S = cfg.num_frames, args.size
    # A 5 s chirp: examples of 0.96 s, the first T of them, one per frame.
    t = torch.arange(16000 * max(T, 5) + 400) / 16000.0
    wave = 0.5 * torch.sin(2 * math.pi * (200.0 + 150.0 * t) * t)
    logmel = log_mel(wave.numpy(), 16000)[:T]                               # (T, 1, 96, 64)
    frames = torch.randn(T, 3, S, S)                                        # (T, 3, S, S)
    with torch.inference_mode():
        model(frames, logmel)                                               # warm-up
        start = time.perf_counter()
        out = model(frames, logmel)
        clip_ms = (time.perf_counter() - start) * 1e3
        cache = [model.encode_frames(frames[i:i + 1], logmel[i:i + 1]) for i in range(T)]
        start = time.perf_counter()
        newest = model.encode_frames(frames[-1:], logmel[-1:])
        step = model.decode(FrameFeatures.cat([*cache[:-1], newest]),
                            torch.tensor([T - 1]), out_size=(S, S))
        frame_ms = (time.perf_counter() - start) * 1e3
    diff = float((out.logits[0][-1:] - step.logits[0]).abs().max())
    print(f"model      {cfg.name}: backbone {cfg.backbone.name}, width {cfg.dim}, "
          f"audio {cfg.audio.encoder}, {count_parameters(model):,} parameters")
    print(f"input      frames {tuple(frames.shape)}, log-mel {tuple(logmel.shape)}")
    print(f"logits     {[tuple(x.shape) for x in out.logits]} (finest first)")
    print(f"keep ratio {[round(float(r), 3) for r in out.keep_ratios]} (stages 3, 2, 1)")
    print(f"clip mode  {clip_ms:.1f} ms for {T} frames; streaming {frame_ms:.1f} ms per new frame")
    print(f"streaming vs clip mode, newest frame: max |logit difference| = {diff:.2e}")
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
