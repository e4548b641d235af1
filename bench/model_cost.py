"""Model cost of PCMANet variants: parameters, FLOPs, CPU time, and QSCA time vs keep ratio.

    python bench/model_cost.py [--variants ...] [--repeats N] [--threads 2] [--size 224]
                               [--qsca-repeats 50] [--json FILE]

Method as docs/pcmanet.md: random init, eval, no_grad, fp32, B = 1 clip of T frames, audio
given as embeddings (audio encoder excluded). FLOPs from FlopCounterMode (2 per MAC; conv,
matmul, linear and attention products; no norm, pooling, interpolation or elementwise ops).
Timings run round-robin over the settings of one table to spread VM noise evenly.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from pcmanet.build import build_pcmanet, count_parameters  # noqa: E402
from pcmanet.config import ModelConfig, load_config  # noqa: E402
from pcmanet.fusion.qsca import QSCA  # noqa: E402
from pcmanet.model import FrameFeatures, PCMANet  # noqa: E402
from pcmanet.official import DROPPED, map_official_key  # noqa: E402
from pcmanet.variants import PCMANET_VARIANTS  # noqa: E402

DEFAULT_VARIANTS = ["resnet50_s4", "pvt_v2_b5_s4", "resnet18_light", "mobilenetv3_light",
                    "efficientnet_b0_light"]
KEY_TABLES = {"resnet50_s4": "official_checkpoint_keys.tsv",
              "pvt_v2_b5_s4": "official_checkpoint_keys_pvt.tsv"}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
# Top-level children of PCMANet -> reported component.
COMPONENT = {"backbone": "backbone", "audio_proj": "lateral+AVGA", "lateral": "lateral+AVGA",
             "avga": "lateral+AVGA", "qsca": "QSCA", "gf": "GF", "heads": "heads"}
PARTS = ["backbone", "lateral+AVGA", "QSCA", "GF", "heads"]


# -- measuring ---------------------------------------------------------------------------------
def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def count_flops(fn: Callable[[], object]) -> dict[str, int]:
    """FLOPs of fn() per module path ('Global' = all). torch registers SDPA for CUDA only."""
    sdpa_cpu = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={sdpa_cpu: _sdpa_cpu_flops}) as fc:
        fn()
    return {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}


def flops_by_part(counts: dict[str, int], root: str = "PCMANet") -> dict[str, float]:
    """Group a clip forward's per-module FLOPs into PARTS (GFLOP)."""
    out = dict.fromkeys(PARTS, 0.0)
    for child, part in COMPONENT.items():
        keys = [k for k in counts if f"{k}.".startswith(f"{root}.{child}.")]
        # Outermost called modules only (ModuleLists and QSCA itself are never called).
        out[part] += sum(counts[k] for k in keys if not any(k.startswith(o + ".") for o in keys))
    # What no child module holds is QSCA's functional part: SDPA and visual_step's to_out matmul.
    out["QSCA"] += counts["Global"] - sum(out.values())
    return {k: v / 1e9 for k, v in out.items()}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
                ) -> dict[str, list[float]]:
    """ms per call of each fn, run round-robin with the order rotated every round."""
    names, times = list(fns), {n: [] for n in fns}
    for r in range(warmup + repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[n]()
            if r >= warmup:
                times[n].append((time.perf_counter() - t0) * 1e3)
    return times


def stats(ms: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(ms), "min_ms": min(ms)}


def part_timer(model: PCMANet) -> tuple[dict[str, float], list]:
    """Wall ms per part inside a forward, accumulated in the returned dict by forward hooks."""
    groups = {"backbone": [model.backbone], "lateral+AVGA": [model.audio_proj, *model.lateral,
              *model.avga], "GF": list(model.gf), "heads": list(model.heads)}
    ms, t0, handles = dict.fromkeys(groups, 0.0), [0.0], []

    def start(*_: object) -> None:
        t0[0] = time.perf_counter()

    for part, modules in groups.items():
        def stop(*_: object, part: str = part) -> None:
            ms[part] += (time.perf_counter() - t0[0]) * 1e3
        for m in modules:  # these modules never nest, so one start time suffices
            handles += [m.register_forward_pre_hook(start), m.register_forward_hook(stop)]
    return ms, handles


@contextmanager
def confident_heads(model: PCMANet):
    """Heads of stages 2-4 output a confident constant, so every CIM mask is empty (ratio 0)."""
    saved = {k: v.clone() for k, v in model.heads.state_dict().items()}
    for h in list(model.heads)[1:]:
        h[-1].weight.zero_()
        h[-1].bias.copy_(torch.eye(len(h[-1].bias))[0] * 30.0)  # p(class 0) ~ 1
    try:
        yield
    finally:
        model.heads.load_state_dict(saved)


def reference_params(name: str) -> dict[str, int] | None:
    """Parameters the official checkpoint holds, by DROPPED rule, from its key table
    (tests/pcmanet/reference/)."""
    path = ROOT / "tests" / "pcmanet" / "reference" / KEY_TABLES.get(name, "-")
    if not path.is_file():
        return None  # not a reference variant
    out = {"table_total": 0, **dict.fromkeys(DROPPED.values(), 0)}
    backbone = PCMANET_VARIANTS[name].backbone.name
    for line in path.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        if key.endswith(BUFFERS):
            continue
        n = math.prod(json.loads(shape))
        out["table_total"] += n
        if map_official_key(key, backbone) is None:
            out[next(why for pat, why in DROPPED.items() if re.match(pat, key))] += n
    return out


# -- section 1: whole variants -----------------------------------------------------------------
@torch.no_grad()
def bench_variant(name: str, size: int, repeats: int, cfg: ModelConfig | None = None) -> dict:
    """Size, FLOPs and time of one variant: clip mode, and streaming one new frame."""
    cfg = cfg or PCMANET_VARIANTS[name]
    T = cfg.num_frames
    torch.manual_seed(0)
    model = build_pcmanet(cfg, with_audio_encoder=False).eval()
    frames, audio = torch.randn(T, 3, size, size), torch.randn(T, cfg.audio.embed_dim)
    newest = torch.tensor([T - 1])
    cache = [model.encode_frames(frames[i:i + 1], audio[i:i + 1]) for i in range(T - 1)]  # older

    def stream_step():  # the newest frame: encode it, decode it from the cached window
        new = model.encode_frames(frames[-1:], audio[-1:])
        return model.decode(FrameFeatures.cat([*cache, new]), newest, (size, size))

    clip_out, stream_out = model(frames, audio), stream_step()
    assert (clip_out.logits[0][-1] - stream_out.logits[0][0]).abs().max() < 1e-3
    counts = count_flops(lambda: model(frames, audio))
    with confident_heads(model):
        empty = model(frames, audio)
        counts0 = count_flops(lambda: model(frames, audio))
    (ms, handles), splits = part_timer(model), []

    def clip_step():
        ms.update(dict.fromkeys(ms, 0.0))
        t0 = time.perf_counter()
        model(frames, audio)
        splits.append({**ms, "QSCA+rest": (time.perf_counter() - t0) * 1e3 - sum(ms.values())})

    times = interleaved({"clip": clip_step, "stream": stream_step}, repeats)
    for h in handles:
        h.remove()
    splits = splits[-repeats:]
    result = {
        "variant": name, "num_frames": T, "params": count_parameters(model),
        "reference_params": reference_params(name),
        "gflop_clip": counts["Global"] / 1e9, "gflop_clip_keep0": counts0["Global"] / 1e9,
        "gflop_stream_frame": count_flops(stream_step)["Global"] / 1e9,
        "gflop_parts": flops_by_part(counts),
        "keep_ratios": [round(float(r), 4) for r in clip_out.keep_ratios],
        "keep_ratios_forced_empty": [round(float(r), 4) for r in empty.keep_ratios],
        "clip": stats(times["clip"]), "stream": stats(times["stream"]),
        "clip_parts_median_ms": {k: statistics.median(s[k] for s in splits) for k in splits[0]},
    }
    if (ref := result["reference_params"]) is not None:
        result["reference_total"] = result["params"] + sum(
            n for k, n in ref.items() if k != "table_total")
    result["stream_over_clip"] = result["stream"]["median_ms"] / result["clip"]["median_ms"]
    return result


# -- section 2: QSCA stage 1 against keep ratio ---------------------------------------------------
# gather_max_ratio per path: dense if the keep ratio is above it; auto is the config default.
PATHS = {"dense": -1.0, "gather": 1.0, "auto": ModelConfig().gather_max_ratio}


@torch.no_grad()
def bench_qsca(repeats: int, ratios=(1.0, 0.5, 0.1, 0.0)) -> list[dict]:
    """Stage-1 QSCA at reference size: C 256, 8 x 32 heads, T 5, 28x28 tokens, out 56x56."""
    C, T, grid, out_size = 256, 5, (28, 28), (56, 56)
    torch.manual_seed(0)
    block = QSCA(C, 8, 32, emits_audio=False).eval()  # as the model's finest stage
    maps, audio = torch.randn(T, C, *out_size), torch.randn(T, C)
    tokens, kv = block.frame_tokens(maps, grid)
    state = block.audio_step(audio, kv, T)

    def run(shape: str, decoded: Tensor) -> list[dict]:
        Fq, N = len(decoded), grid[0] * grid[1]
        clip = torch.zeros(Fq, dtype=torch.long)
        settings = {("dense", "none"): (PATHS["dense"], None)}
        for r in ratios:  # exactly round(r * N) selected tokens in every decoded frame
            keep = torch.zeros(Fq, N)
            keep[:, :round(r * N)] = 1.0
            mask = keep.gather(1, torch.rand(Fq, N).argsort(1)).reshape(Fq, 1, *grid)
            settings.update({(p, r): (g, mask) for p, g in PATHS.items()})

        def visual(gmr, mask):
            block.gather_max_ratio = gmr
            return block.visual_step(tokens[decoded], clip, state, grid, out_size, mask)

        def full(gmr, mask):  # per-frame tokens of the decoded frames, audio chain, queries
            block.gather_max_ratio = gmr
            t, k = block.frame_tokens(maps[decoded], grid)
            window_kv = None if k is None else torch.cat([kv[:T - Fq], k])  # cached + new
            a = block.audio_step(audio, window_kv, T)
            return block.visual_step(t, clip, a, grid, out_size, mask)

        fns = {(s, scope): (lambda f=f, a=a: f(*a))
               for s, a in settings.items() for scope, f in (("visual", visual), ("full", full))}
        times = interleaved(fns, repeats, warmup=3)
        return [{"shape": shape, "path": path, "keep": r, "decoded_frames": Fq,
                 "visual": stats(times[(path, r), "visual"]),
                 "full": stats(times[(path, r), "full"]),
                 "gflop_visual": count_flops(lambda a=args: visual(*a))["Global"] / 1e9,
                 "gflop_full": count_flops(lambda a=args: full(*a))["Global"] / 1e9}
                for (path, r), args in settings.items()]

    rows = run("clip", torch.arange(T)) + run("stream", torch.tensor([T - 1]))
    block.gather_max_ratio = PATHS["auto"]
    return rows


# -- report ------------------------------------------------------------------------------------
def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def report(variants: list[dict], qsca: list[dict]) -> str:
    out = []
    if variants:
        rows = []
        for v in variants:
            ref = v["reference_params"]
            rows.append([v["variant"], f"{v['params']:,}", f"{v['reference_total']:,}" if ref
                         else "–",
                         f"{v['gflop_clip']:.2f}", f"{v['gflop_clip'] / v['num_frames']:.2f}",
                         f"{v['gflop_clip_keep0']:.2f}", f"{v['gflop_stream_frame']:.2f}",
                         "/".join(f"{r:.2f}" for r in v["keep_ratios"])])
        out += ["### Size and FLOPs (B = 1 clip of T frames)", table(
            ["variant", "params (ours)", "reference params (ours + dropped)", "GFLOP/clip",
             "GFLOP/frame", "GFLOP/clip, masks empty", "GFLOP/new frame (stream)",
             "keep ratio s3/s2/s1"], rows)]
        for v in (v for v in variants if v["reference_params"]):
            ref = v["reference_params"]
            out.append(f"* {v['variant']}: ours {v['params']:,} + dropped " + " + ".join(
                f"{n:,} ({k})" for k, n in ref.items() if k != "table_total" and n)
                + f" = {v['reference_total']:,}; key table holds {ref['table_total']:,}")
        out += ["", "### GFLOP per clip by component", table(
            ["variant", *PARTS, "total"],
            [[v["variant"], *(f"{v['gflop_parts'][p]:.2f}" for p in PARTS),
              f"{v['gflop_clip']:.2f}"] for v in variants])]
        out += ["", "### CPU ms (median / min)", table(
            ["variant", "clip forward", "per frame (clip / T)", "stream: new frame",
             "stream / clip", "clip parts (median ms): " + ", ".join(
                 variants[0]["clip_parts_median_ms"])],
            [[v["variant"], f"{v['clip']['median_ms']:.0f} / {v['clip']['min_ms']:.0f}",
              f"{v['clip']['median_ms'] / v['num_frames']:.0f}",
              f"{v['stream']['median_ms']:.0f} / {v['stream']['min_ms']:.0f}",
              f"{v['stream_over_clip']:.2f}",
              " / ".join(f"{x:.0f}" for x in v["clip_parts_median_ms"].values())]
             for v in variants])]
    for shape in ("clip", "stream"):
        rows = [r for r in qsca if r["shape"] == shape]
        if not rows:
            continue
        base = {s: rows[0][s]["median_ms"] for s in ("visual", "full")}
        out += ["", f"### QSCA stage 1, {shape} shape ({rows[0]['decoded_frames']} decoded "
                "frame(s) of a 5-frame window), ms median / min", table(
                    ["path", "keep", "visual_step", "vs dense, no mask", "GFLOP", "full stage",
                     "vs dense, no mask", "GFLOP"],
                    [[r["path"], r["keep"] if r["keep"] == "none" else f"{r['keep']:.0%}",
                      *(x for s in ("visual", "full") for x in (
                          f"{r[s]['median_ms']:.2f} / {r[s]['min_ms']:.2f}",
                          f"{r[s]['median_ms'] / base[s]:.0%}", f"{r['gflop_' + s]:.3f}"))]
                     for r in rows])]
        med = {(r["path"], r["keep"]): r["visual"]["median_ms"] for r in rows}
        out.append("* visual_step, auto / faster of dense and gather: " + ", ".join(
            f"{k:.0%} {med['auto', k] / min(med['dense', k], med['gather', k]):.2f}"
            for p, k in med if p == "auto"))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS, choices=PCMANET_VARIANTS)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per variant setting")
    p.add_argument("--qsca-repeats", type=int, default=50,
                   help="timed runs per QSCA setting; 0 skips section 2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--configs", nargs="*", default=[], type=Path,
                   help="also these config files (e.g. configs/demo.yaml), each at its own "
                   "data.image_size")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = []
    for name in args.variants:
        variants.append(bench_variant(name, args.size, args.repeats))
        print(f"{name}: done", file=sys.stderr, flush=True)
    for path in args.configs:
        run = load_config(path)
        size = run.data.image_size or args.size
        variants.append(bench_variant(f"{run.model.name}@{size}", size, args.repeats, run.model))
        print(f"{path}: done", file=sys.stderr, flush=True)
    qsca = bench_qsca(args.qsca_repeats) if args.qsca_repeats else []
    print(f"torch {torch.__version__}, {args.threads} threads, {args.size}x{args.size}, "
          f"repeats {args.repeats} (QSCA {args.qsca_repeats})\n")
    print(report(variants, qsca))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "variants": variants, "qsca": qsca}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
