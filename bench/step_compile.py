"""The engine step eager vs compiled (``live.engine.compile``), on this machine's CPU.

    python bench/step_compile.py [--model demo|resnet50|pvt_v2_b5] [--frames 150]
                                 [--threads 1] [--carry] [--freezing on|off] [--profile N]
                                 [--json OUT]

Runs the same demo-scene frames (30 FPS) through two single-stream engines, one eager and one
whose static step is ``torch.compile``d (compiled before the clock starts; its compile time is
reported), alternating frame by frame so both see the same machine load, and reports each
step's p50 / p90 (``BatchedEngine.step``: preprocessing, the static step, upsampling and the
copy to the host) and their ratio, the static step's alone, and the largest logit
difference; and where a step's time goes: the median of each stage (preprocessing, the static
step, upsampling and the copy to the host) and, with ``--profile N``, torch.profiler's top
operators by self CPU time over N more steps of each. ``demo`` is the shipped demo model;
the reference variants have random weights (speed does not depend on them) at 224.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import stream.engine.compiled as compiled_mod
from calib.scene_eval import scene_frames
from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.build import build_pcmanet
from pcmanet.checkpoint import load_checkpoint
from pcmanet.data.synthetic_demo import DemoScene
from pcmanet.variants import reference_config
from stream.engine.batch import BatchedEngine
from stream.engine.parts import CarryConfig


def load(name: str) -> tuple[torch.nn.Module, int]:
    if name == "demo":
        model, _cfg, extra = load_checkpoint(DEMO_CHECKPOINT)
        return model, int(extra["data"]["image_size"])
    torch.manual_seed(0)
    return build_pcmanet(reference_config(name, "s4"), with_audio_encoder=True).eval(), 224


def stage_ms(times_ns: dict[str, int], total_ms: float) -> dict[str, float]:
    """One step's stages in ms: preprocess, the static step, upsampling (after the step), and
    the rest of ``step`` (the copy to the host, Python around it)."""
    t = times_ns
    pre = (t["encode_start"] - t["preprocess_start"]) / 1e6
    static = (t["decode_start"] - t["encode_start"]) / 1e6
    upsample = (t["decode_end"] - t["decode_start"]) / 1e6
    return {"preprocess": pre, "static_step": static, "upsample": upsample,
            "host_copy_and_python": total_ms - pre - static - upsample}


def profile(engine: BatchedEngine, state: object, frames: list, top: int = 12) -> list[dict]:
    """torch.profiler over these steps: the top operators by self CPU time, per step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for paired in frames:
            engine.step([(state, paired)])  # type: ignore[list-item]
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / len(frames),
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/step_compile.py",
                                description=__doc__.split("\n")[0])
    p.add_argument("--model", default="demo", choices=["demo", "resnet50", "pvt_v2_b5"])
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--threads", type=int, default=1, help="torch threads (live default: 1)")
    p.add_argument("--carry", action="store_true", help="CIM carry-over on")
    p.add_argument("--freezing", choices=["on", "off"],
                   help="inductor's freezing (weights as constants, pre-packed for oneDNN); "
                        "default: the engine's (on ahead of time)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="torch.profiler over N more steps of each engine: top operators")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.freezing:
        compiled_mod.AOT_OPTIONS = {"freezing": args.freezing == "on"}
        compiled_mod.CPU_OPTIONS = {"freezing": args.freezing == "on"}
    model, size = load(args.model)
    carry = CarryConfig(enabled=args.carry)
    eager = BatchedEngine(model, size, carry=carry, compile="off")
    compiled = BatchedEngine(model, size, carry=carry, compile="on")
    t0 = time.perf_counter()
    compiled.steps_fn.warm([(1, True)])
    compile_s = time.perf_counter() - t0
    se, sc = eager.new_stream(), compiled.new_stream()
    frames = [f.paired for f in scene_frames(DemoScene(seed=3, size=480, fps=30),
                                              range(args.frames + 10))]
    te: list[float] = []
    tc: list[float] = []
    se_ms: list[float] = []
    sc_ms: list[float] = []
    worst = 0.0
    stages: dict[str, dict[str, list[float]]] = {"eager": {}, "compiled": {}}
    for k, paired in enumerate(frames):
        t0 = time.perf_counter()
        a = eager.step([(se, paired)])[0]
        t1 = time.perf_counter()
        b = compiled.step([(sc, paired)])[0]
        t2 = time.perf_counter()
        if k >= 10:                                  # warm-up excluded
            te.append(t1 - t0)
            tc.append(t2 - t1)
            for r, acc in ((a, se_ms), (b, sc_ms)):             # the static step alone
                acc.append((r.times_ns["decode_start"] - r.times_ns["encode_start"]) / 1e6)
            worst = max(worst, float((a.logits - b.logits).abs().max()))
            for name, r, total in (("eager", a, t1 - t0), ("compiled", b, t2 - t1)):
                for stage, ms in stage_ms(r.times_ns, 1e3 * total).items():
                    stages[name].setdefault(stage, []).append(ms)
    out: dict[str, object] = {"model": args.model, "input_size": size, "threads": args.threads,
           "inductor_options": dict(compiled_mod.AOT_OPTIONS),
           "carry": args.carry, "frames": len(te), "compile_s": compile_s,
           "eager_p50_ms": 1e3 * float(np.median(te)),
           "eager_p90_ms": 1e3 * float(np.percentile(te, 90)),
           "compiled_p50_ms": 1e3 * float(np.median(tc)),
           "compiled_p90_ms": 1e3 * float(np.percentile(tc, 90)),
           "ratio_p50": float(np.median(tc) / np.median(te)),
           "static_eager_p50_ms": float(np.median(se_ms)),
           "static_compiled_p50_ms": float(np.median(sc_ms)),
           "static_ratio_p50": float(np.median(sc_ms) / np.median(se_ms)),
           "max_logit_diff": worst}
    for name, per in stages.items():
        out[f"stages_{name}_p50_ms"] = {s: float(np.median(v)) for s, v in per.items()}
    if args.profile:
        rest = [f.paired for f in scene_frames(DemoScene(seed=4, size=480, fps=30),
                                                range(args.profile))]
        for name, engine in (("eager", eager), ("compiled", compiled)):
            out[f"profile_{name}"] = profile(engine, engine.new_stream(), rest)
    for key, v in out.items():
        if isinstance(v, list):
            print(f"{key}:")
            for row in v:
                print(f"  {row['self_ms_per_step']:7.3f} ms  {100 * row['share']:5.1f} %  "
                      f"{row['op']}")
        else:
            print(f"{key:18s} {v:.3f}" if isinstance(v, float) else f"{key:18s} {v}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
