"""Smoke run: the shipped demo model segments the synthetic live-demo scene (no files needed).

    python -m pcmanet.smoke [--checkpoint CKPT | --config CONFIG] [--seconds 30] [--threads 2]

For one frame per second of the scene (from t = 5 s on), builds the model's 5-frame window
(the newest frame and the frames 1, 2, 3, 4 s before it, each with the 0.96 s of audio ending
at its time), predicts the newest frame's mask in streaming mode (cached per-frame features,
decode of the newest frame only), checks it against clip mode, and scores it against the
object that is really sounding. With `--config` instead of a checkpoint the model has random
weights (a plumbing check).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.audio import log_mel
from pcmanet.build import build_pcmanet, count_parameters
from pcmanet.checkpoint import CheckpointError, load_checkpoint
from pcmanet.cli import Parser
from pcmanet.config import ConfigError, load_config
from pcmanet.data.synthetic_demo import DemoScene
from pcmanet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pcmanet.model import FrameFeatures, PCMANet

AUDIO_WINDOW = 15600                              # samples of one 96-frame log-mel example


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m pcmanet.smoke",
                                description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT), help="our checkpoint")
    p.add_argument("--config", default=None, help="build this config with random weights")
    p.add_argument("--seconds", type=int, default=30, help="scene length to score")
    p.add_argument("--size", type=int, default=None, help="model input size (default: trained)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=7, help="demo scene seed")
    return p.parse_args(argv)


def frame_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 BGR -> (1, 3, size, size) normalised RGB."""
    x = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                        align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    return (x - mean) / torch.tensor(IMAGENET_STD)[:, None, None]


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
    T, fps = cfg.num_frames, 30
    scene = DemoScene(seed=args.seed, size=224, fps=fps)
    cache: dict[int, FrameFeatures] = {}
    ious, diffs, times = [], [], []
    with torch.inference_mode():
        for second in range(T, args.seconds + 1):
            indices = [(second - T + 1 + j) * fps for j in range(T)]    # oldest first, 1 s apart
            for i in indices:
                if i not in cache:
                    image, _, _ = scene.frame(i)
                    end = scene.frame_sample(i)
                    mel = log_mel(scene.audio(end - AUDIO_WINDOW, AUDIO_WINDOW), 16000)
                    start = time.perf_counter()
                    cache[i] = model.encode_frames(frame_tensor(image, size), mel[:1])
                    encode_ms = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            out = model.decode(FrameFeatures.cat([cache[i] for i in indices]),
                               torch.tensor([T - 1]), out_size=(size, size))
            times.append(encode_ms + (time.perf_counter() - start) * 1e3)
            _, mask, sounding = scene.frame(indices[-1])
            pred = torch.nn.functional.interpolate(out.logits[0], size=(224, 224),
                                                   mode="bilinear", align_corners=False)[0, 0] > 0
            gt = torch.from_numpy(mask > 127)
            union = int((pred | gt).sum())
            ious.append(1.0 if union == 0 else int((pred & gt).sum()) / union)
            if second == T:                                             # streaming == clip mode
                frames = torch.cat([frame_tensor(scene.frame(i)[0], size) for i in indices])
                mels = torch.cat([log_mel(scene.audio(scene.frame_sample(i) - AUDIO_WINDOW,
                                                      AUDIO_WINDOW), 16000)[:1] for i in indices])
                clip = model(frames, mels).logits[0][-1:]                # (1, 1, size, size)
                diffs.append(float((clip - out.logits[0]).abs().max()))
            for i in list(cache):                                       # keep the window only
                if i < indices[1]:
                    del cache[i]
            print(f"t={second:3d} s  sounding {sounding or '(silence)':18s} IoU {ious[-1]:.3f}")
    print(f"model {name}: {count_parameters(model):,} parameters, input {size}x{size}")
    print(f"mean IoU with the sounding object over {len(ious)} frames: {np.mean(ious):.3f}")
    print(f"streaming step (encode newest + decode): median {np.median(times):.1f} ms; "
          f"streaming vs clip mode max |logit diff| {max(diffs):.1e}")
    return 0 if max(diffs) < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
