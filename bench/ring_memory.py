"""Feature memory per stream: the per-frame feature list the engine had vs the feature ring.

    python bench/ring_memory.py [--variant resnet50] [--size 224] [--fps 30] [--seconds 10]
                                [--streams 4] [--json OUT]

Streams ``--seconds`` of frames at ``--fps`` through the engine's retention policy and reports,
for the reference variant (random weights: memory does not depend on them) in fp32:

* ``list``: what the old per-frame list held per stream: every held frame's whole
  ``FrameFeatures`` (AVGA maps, QSCA tokens, keys/values, audio token, refiner features), each
  entry a view that keeps the storage of the whole batch it was encoded in (so with N streams
  batched, a held frame keeps all N rows alive);
* ``ring``: the ring's preallocated keys/values and audio tokens (every slot a stream can hold),
  plus the newest frame's full features once (a step's intermediates, not kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pcmanet.build import build_pcmanet
from pcmanet.variants import reference_config
from stream.engine.batch import BatchedEngine
from stream.engine.ring import WindowIndex

MB = 2**20


def feature_bytes(engine: BatchedEngine) -> int:
    """Bytes of one frame's whole FrameFeatures (fp32)."""
    x = torch.zeros(1, 3, engine.size, engine.size)
    with torch.inference_mode():
        f = engine.model.encode_frames(x, engine.model.embed_audio(engine.audio_input(None)))
    tensors = [*f.maps, *f.tokens, *(k for k in f.kv if k is not None), f.audio]
    if f.fine is not None:
        tensors.append(f.fine)
    return sum(t.numel() * t.element_size() for t in tensors)


def held_frames(engine: BatchedEngine, fps: float, seconds: float) -> int:
    """Most frames the retention policy holds at once over ``seconds`` at ``fps``."""
    index = WindowIndex(engine.slots, engine.horizon_s, engine.retain_s, engine.T,
                        engine.spacing_s)
    most = 0
    for i in range(round(fps * seconds)):
        index.commit(index.plan(round(i * 1e9 / fps), i))
        most = max(most, len(index))
    return most


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/ring_memory.py",
                                description=__doc__.split("\n")[0])
    p.add_argument("--variant", default="resnet50", choices=["resnet50", "pvt_v2_b5"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--streams", type=int, default=4, help="streams batched together")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    model = build_pcmanet(reference_config(args.variant, "s4"), with_audio_encoder=True).eval()
    engine = BatchedEngine(model, args.size)
    per_frame = feature_bytes(engine)
    held = held_frames(engine, args.fps, args.seconds)
    ring = engine.feature_bytes_per_stream()
    out = {
        "variant": args.variant, "input_size": args.size, "dtype": "fp32", "fps": args.fps,
        "frames_held": held, "ring_slots": engine.slots,
        "frame_features_mb": per_frame / MB,
        "list_per_stream_mb": held * per_frame / MB,
        "list_per_stream_batched_mb": held * per_frame * args.streams / MB,
        "ring_per_stream_mb": ring / MB,
        "ring_plus_newest_mb": (ring + per_frame) / MB,
        "streams_batched": args.streams,
    }
    for k, v in out.items():
        print(f"{k:28s} {v:.2f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
