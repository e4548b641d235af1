"""Where the streaming engine's time goes, and what the usual CPU levers change.

    python bench/profile_engine.py [--frames 60] [--threads 1] [--weights CKPT]
                                   [--variants default,channels_last,fp16_cache,compile]

1. torch.profiler over ``--frames`` engine steps on the demo scene: the top operators by self
   CPU time and the engine's own stages (preprocess, encode, decode).
2. The median step time (after 10 warm-up steps) with each variant of the same engine:
   ``default``; ``channels_last`` (model and input in NHWC); ``fp16_cache`` (cached features in
   float16); ``bf16`` (autocast to bfloat16); ``compile`` (``torch.compile`` of the backbone,
   inductor); ``threads2`` (2 torch threads). Run it with nothing else busy: the figures are
   per-frame CPU times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from calib.scene_eval import scene_frames  # noqa: E402
from pcmanet.data.synthetic_demo import DemoScene  # noqa: E402
from stream.engine.engine import StreamingEngine  # noqa: E402
from stream.run.app import load_model  # noqa: E402

VARIANTS = ("default", "channels_last", "fp16_cache", "bf16", "compile", "threads2")


def build(variant: str, weights: str | None) -> StreamingEngine:
    model, size, _ = load_model(argparse.Namespace(weights=weights, vggish=None, variant=None))
    cache_dtype, precision = None, "fp32"
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    elif variant == "fp16_cache":
        cache_dtype = torch.float16
    elif variant == "bf16":
        precision = "bf16"
    elif variant == "compile":
        model.backbone = torch.compile(model.backbone)  # type: ignore[assignment]
    return StreamingEngine(model, size, cache_dtype=cache_dtype, precision=precision)


def step_times(engine: StreamingEngine, frames: list, warmup: int = 10) -> list[float]:
    out = []
    for k, f in enumerate(frames):
        t0 = time.perf_counter()
        engine.step(f.paired)
        if k >= warmup:
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weights", default=None)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    scene = DemoScene(seed=7, size=224, fps=30)
    frames = list(scene_frames(scene, range(args.frames + 10)))
    torch.set_num_threads(args.threads)

    engine = build("default", args.weights)
    step_times(engine, frames[:10], warmup=10)
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for f in frames[10:]:
            with record_function("engine.step"):
                engine.step(f.paired)
    print(f"torch.profiler, {len(frames) - 10} steps, {args.threads} thread(s):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))

    print(f"{'variant':<14} {'median ms':>9} {'p90 ms':>7}")
    for variant in args.variants.split(","):
        torch.set_num_threads(2 if variant == "threads2" else args.threads)
        try:
            times = step_times(build(variant, args.weights), frames)
        except Exception as e:  # e.g. no C++ compiler for inductor
            print(f"{variant:<14} failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
            continue
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"{variant:<14} {statistics.median(times):>9.1f} {p90:>7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
