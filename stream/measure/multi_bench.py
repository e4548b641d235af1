"""``python -m stream.bench --streams N[,N...]``: the multi-stream benchmark (issue 15, item 4).

For each N, one run_live process-equivalent (:func:`stream.run.session.multi_session`) serves
N streams: N demo scenes with seeds 0..N-1 (``--source demo``), or N copies of a media file.
A subscriber process receives every ``mask/<name>`` and stamps its arrival. Reported per stream
and pooled over all streams (after ``--warmup``): FPS in and out, end-to-end latency (capture ->
received) p50/p95/p99/max, drops at every buffer; plus the aggregate masks per second and the
batching figures. ``--plot`` draws p99 (pooled and the worst stream) against N.

    python -m stream.bench --streams 1,2,4 --duration 20 --set live.source.fps=15 \\
        --json bench/results/multi_cpu.json --plot bench/results/multi_cpu.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pcmanet.checkpoint import CheckpointError
from pcmanet.config import ConfigError, config_to_dict
from stream.capture.base import SourceError
from stream.measure import bench
from stream.measure.bench import _finite, free_port, pipeline_argv, subscribed
from stream.measure.latency import report
from stream.run import app
from stream.run.config import StreamSettings
from stream.run.pipeline import PipelineError
from stream.transport.sockets import BindError

TARGET_P99_MS = 100.0


def run_streams(args: argparse.Namespace, n: int, workdir: Path) -> dict[str, Any]:
    """One run with ``n`` streams -> its report (per stream, pooled, aggregate, batching)."""
    url = f"tcp://127.0.0.1:{args.port or free_port()}"
    argv = pipeline_argv("demo", url, "s0", args.duration, 10, args.config, args.overrides,
                         args.weights, args.device)
    argv.remove("--demo")
    argv.remove("--stream")
    argv.remove("s0")
    a = app.parse_args(argv)
    cfg = app.resolve_config(a)
    source = args.source
    streams = tuple(StreamSettings(name=f"s{i}", source=f"demo:{i}" if source == "demo"
                                   else source) for i in range(n))
    # The steady state is measured: compiled steps are compiled before the clock starts.
    cfg = replace(cfg, streams=streams, engine=replace(cfg.engine, compile_wait=True))
    specs = app.resolve_streams(a, cfg)
    out = workdir / f"received_{n}.jsonl"
    load_before = os.getloadavg()
    with subscribed(url, "mask/", out) as records, app.multi_session(a, cfg, specs) as s:
        t0 = time.monotonic()
        summary = s.pipeline.run()
        span = time.monotonic() - t0
        pub = {spec.name: s.publisher.counters(spec.name) for spec in specs}
        model, size, device = s.model_name, s.size, str(s.device)
    meta = {"source": source, "live": config_to_dict(cfg), "model": model, "input_size": size,
            "device": device, "duration_s": args.duration}
    per_stream: dict[str, Any] = {}
    pooled_counters: dict[str, Any] = {"frame_ring": {"dropped": 0}, "engine": {
        "handoff_dropped": 0, "frame_errors": 0}, "publisher": {"published": 0, "dropped": 0}}
    captured_total = 0
    for spec in specs:
        c = dict(summary.counters["streams"][spec.name])
        c["publisher"] = {"published": pub[spec.name]["published"],
                          "dropped": pub[spec.name]["dropped_at_socket"]}
        captured = int(c["frame_ring"]["written"])
        captured_total += captured
        mine = [r for r in records if r["stream"] == spec.name]
        rep = report(mine, args.warmup, c, captured, span, "stream", {})
        rep.pop("config")
        rep["state"] = c["state"]
        per_stream[spec.name] = rep
        pooled_counters["frame_ring"]["dropped"] += c["frame_ring"]["dropped"]
        for k in ("handoff_dropped", "frame_errors"):
            pooled_counters["engine"][k] += c["engine"][k]
        for k in ("published", "dropped"):
            pooled_counters["publisher"][k] += c["publisher"][k]
    pooled = report(records, args.warmup, pooled_counters, captured_total, span, "stream", {})
    pooled.pop("config")
    pooled.pop("pairing")
    worst_p99 = max(r["e2e_ms"]["p99"] for r in per_stream.values())
    fps_each = min(r["fps_out"] for r in per_stream.values())
    return {"streams": n, "per_stream": per_stream, "pooled": pooled,
            "aggregate_fps_out": pooled["fps_out"], "worst_stream_p99_ms": worst_p99,
            "min_stream_fps_out": fps_each, "batch": summary.counters["batch"],
            "target": {"p99_ms": TARGET_P99_MS, "p99_met": worst_p99 <= TARGET_P99_MS},
            "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
            "config": meta}


def format_multi(rep: dict[str, Any]) -> str:
    lines = [f"{rep['streams']} streams: aggregate {rep['aggregate_fps_out']:.1f} masks/s, "
             f"mean batch {rep['batch']['mean_size']:.2f}; load avg "
             f"{rep['load_avg_before'][0]:.2f} -> {rep['load_avg_after'][0]:.2f}",
             f"{'stream':8s} {'fps in':>7s} {'fps out':>7s} {'p50 ms':>8s} {'p99 ms':>8s} "
             f"{'ring drops':>10s} {'socket drops':>12s}"]
    rows = {**rep["per_stream"], "POOLED": rep["pooled"]}
    for name, r in rows.items():
        lines.append(f"{name:8s} {r['fps_in']:7.1f} {r['fps_out']:7.1f} {r['e2e_ms']['p50']:8.1f} "
                     f"{r['e2e_ms']['p99']:8.1f} {r['drops']['frame_ring']:10d} "
                     f"{r['drops']['socket']:12d}")
    return "\n".join(lines)


def plot_p99(path: Path, runs: list[dict[str, Any]]) -> None:
    """p99 end-to-end latency (pooled and worst stream) against the number of streams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["streams"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ns, [r["pooled"]["e2e_ms"]["p99"] for r in runs], "o-", label="pooled p99")
    ax.plot(ns, [r["worst_stream_p99_ms"] for r in runs], "s--", label="worst stream p99")
    ax.plot(ns, [r["pooled"]["e2e_ms"]["p50"] for r in runs], "^:", label="pooled p50")
    ax.axhline(TARGET_P99_MS, color="grey", lw=0.8, ls="--", label="target p99")
    ax.set(xlabel="streams (N)", ylabel="end-to-end latency (ms)", xticks=ns,
           title="latency against the number of streams")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main_streams(args: argparse.Namespace) -> int:
    """Every N of ``--streams`` in turn; JSON and plot as asked."""
    import tempfile

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.streams:
            rep = run_streams(args, n, Path(tmp))
            print(format_multi(rep), flush=True)
            print()
            runs.append(rep)
    if args.json:
        args.json.write_text(json.dumps(_finite({"runs": runs}), indent=1) + "\n")
    if args.plot:
        plot_p99(args.plot, runs)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m stream.bench``: ``--streams`` here, everything else :func:`bench.main`."""
    args = bench.parse_args(argv)
    if not args.streams:
        return bench.main(argv)
    if args.compare or args.mode:
        print("error: --streams runs the streaming mode; drop --compare / --mode",
              file=sys.stderr)
        return 2
    problem = bench.argument_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        return main_streams(args)
    except (app.UserError, ConfigError, CheckpointError, SourceError, BindError,
            PipelineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

