"""In-process measurements of ``bench/gpu_proof.py``: step latency, frames/s per bucket, overlap.

Every figure times what a frame costs the live path: :meth:`BatchedEngine.step` (host frames
staged through pinned buffers, preprocessing, the static step, upsampling, the mask back in
host memory; it returns once the mask is there), so no extra device synchronisation is needed
around it. Models: ``demo`` (the shipped weights at their size), ``resnet50`` and
``pvt_v2_b5`` (the reference variants with random weights: speed does not depend on them).
``Sizes`` says how large each measurement is (``QUICK`` for the CPU test, ``FULL`` for a GPU).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from calib.scene_eval import scene_frames
from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.build import build_pcmanet
from pcmanet.checkpoint import load_checkpoint
from pcmanet.data.synthetic_demo import DemoScene
from pcmanet.model import PCMANet
from pcmanet.variants import reference_config
from stream.buffers.frames import Frame, PairedFrame
from stream.engine.batch import DEFAULT_BUCKETS, BatchedEngine
from stream.engine.engine import StreamingEngine
from stream.engine.gpu_pipeline import StreamRunner
from stream.engine.timeline import in_flight_curve, summary

MODELS = ("demo", "resnet50", "pvt_v2_b5")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Sizes:
    """How much each measurement runs."""

    reference_size: int          # input side of the reference variants (224 on a GPU)
    source_px: int               # demo-scene frame side
    warmup: int                  # untimed steps before each timing
    frames: int                  # timed steps per (model, precision, eager|graphed)
    buckets: tuple[int, ...]     # batch sizes measured for frames/s
    bucket_steps: int            # timed steps per bucket
    overlap_frames: int          # frames through StreamRunner
    overlap_px: int              # their side (large frames: copies worth hiding)
    stand_ins: dict[str, str] = dataclasses.field(default_factory=dict)
    # ^ a reference variant's backbone replaced by a small one of its family (the CPU test)


FULL = Sizes(224, 224, 10, 100, DEFAULT_BUCKETS, 20, 300, 720)
QUICK = Sizes(64, 64, 1, 2, (1, 2, 4), 2, 8, 96,
              stand_ins={"resnet50": "resnet18", "pvt_v2_b5": "pvt_v2_b0"})


def load(name: str, sizes: Sizes, device: torch.device) -> tuple[PCMANet, int]:
    """(model in eval mode on ``device``, input side)."""
    if name == "demo":
        model, _cfg, extra = load_checkpoint(DEMO_CHECKPOINT)
        return model.to(device), int(extra["data"]["image_size"])
    torch.manual_seed(0)
    cfg = reference_config(name, "s4")
    if name in sizes.stand_ins:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(
            cfg.backbone, name=sizes.stand_ins[name]))
    model = build_pcmanet(cfg, with_audio_encoder=True).eval()
    return model.to(device), sizes.reference_size


def source(n: int, px: int, seed: int = 0, distinct: int = 6) -> list[PairedFrame]:
    """n paired demo-scene frames at 30 FPS (``distinct`` images and log-mels, cycled, with
    increasing capture times and indices)."""
    base = [f.paired for f in scene_frames(DemoScene(seed=seed, size=px, fps=30),
                                           range(30, 30 + distinct))]
    out = []
    for i in range(n):
        p = base[i % distinct]
        out.append(dataclasses.replace(p, frame=Frame(p.frame.image, 1_000_000_000 + i * 33_333_333,
                                                      i)))
    return out


def _ms(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=10) if len(samples) > 1 else samples * 9
    return {"p50": statistics.median(samples), "p90": q[8], "n": len(samples)}


def step_latency(engine: BatchedEngine, frames: list[PairedFrame], warmup: int
                 ) -> dict[str, float]:
    """ms per one-stream step over ``frames`` (the first ``warmup`` untimed)."""
    state, times = engine.new_stream(), []
    for i, p in enumerate(frames):
        t0 = time.perf_counter()
        engine.step([(state, p)])
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return _ms(times)


def step_figures(device: torch.device, sizes: Sizes, models: tuple[str, ...] = MODELS
                 ) -> dict[str, Any]:
    """Per model and precision: step p50/p90 ms eager and graphed, and their ratio."""
    out: dict[str, Any] = {}
    for name in models:
        model, size = load(name, sizes, device)
        frames = source(sizes.warmup + sizes.frames, sizes.source_px)
        out[name] = {"input_size": size, "backbone": sizes.stand_ins.get(name, name)}
        for precision in PRECISIONS:
            eager = BatchedEngine(model, size, device, precision=precision)
            # On CUDA the graphed engine makes its model channels-last: a copy of its own.
            graphed = BatchedEngine(copy.deepcopy(model) if device.type == "cuda" else model,
                                    size, device, precision=precision, graphs=True)
            e = step_latency(eager, frames, sizes.warmup)
            g = step_latency(graphed, frames, sizes.warmup)
            out[name][precision] = {"eager_ms": e, "graphed_ms": g,
                                    "graphed_over_eager": g["p50"] / e["p50"]}
            del eager, graphed
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def bucket_figures(device: torch.device, sizes: Sizes, name: str, precision: str
                   ) -> dict[str, Any]:
    """Graphed step, P streams at once for each bucket P: frames/s (P x steps / seconds)."""
    model, size = load(name, sizes, device)
    engine = BatchedEngine(model, size, device, precision=precision, graphs=True,
                           streams=max(sizes.buckets))
    states = [engine.new_stream() for _ in range(max(sizes.buckets))]
    frames = source(sizes.warmup + sizes.bucket_steps, sizes.source_px)
    fps: dict[str, float] = {}
    for k, P in enumerate(sizes.buckets):
        elapsed = 0.0
        for i, p in enumerate(frames):
            n = k * len(frames) + i                # capture times keep increasing per stream
            frame = Frame(p.frame.image, 1_000_000_000 + n * 33_333_333, n)
            t0 = time.perf_counter()
            engine.step([(s, dataclasses.replace(p, frame=frame)) for s in states[:P]])
            if i >= sizes.warmup:
                elapsed += time.perf_counter() - t0
        fps[str(P)] = P * sizes.bucket_steps / elapsed
    return {"model": name, "precision": precision, "input_size": size, "frames_per_s": fps}


def overlap_figures(device: torch.device, sizes: Sizes, name: str, precision: str
                    ) -> dict[str, Any]:
    """StreamRunner (2 in flight, graphed step where CUDA) over large frames: frames in flight
    over time, the share of copy time hidden under compute, and frames/s."""
    model, size = load(name, sizes, device)
    cuda = device.type == "cuda"
    engine = StreamingEngine(model, size, device, precision=precision, cuda_graphs=cuda)
    frames = source(sizes.overlap_frames + 4, sizes.overlap_px)
    warm = StreamRunner(engine, max_in_flight=2)          # captures the graph, warms cuDNN
    for p in frames[:4]:
        warm.submit(p)
    warm.poll(wait=True)
    runner = StreamRunner(engine, max_in_flight=2, timeline=True)
    done, t0 = 0, time.perf_counter()
    for p in frames[4:]:
        done += len(runner.submit(p)) + len(runner.poll())
    done += len(runner.poll(wait=True))
    seconds = time.perf_counter() - t0
    spans = runner.timeline()
    curve = in_flight_curve(spans)
    step = max(1, len(curve) // 60)
    return {"model": name, "precision": precision, "graphed": cuda,
            "frame_px": sizes.overlap_px, **summary(spans), "frames_per_s": done / seconds,
            "host_max_in_flight": runner.max_seen_in_flight,
            "in_flight_curve": [[round(t, 3), n] for t, n in curve[::step]]}
