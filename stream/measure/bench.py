"""Latency benchmark (docs/design.md 8): the live pipeline, a subscriber in another process.

    python -m stream.bench --source demo --duration 20 [--config C.yaml] [--json out.json]
                           [--plot out.png] [--compare] [--warmup 3] [--weights W] [--mic NAME]

``--source``: ``demo`` (the synthetic scene at 30 FPS), a media file, a camera index or a URL.
Every published mask carries its stage timestamps (``stream.measure.latency.STAGES``); a subscriber
process stamps its arrival. Reported per stage and end to end (capture -> received): p50, p95,
p99, max; input and output FPS; drops at every buffer; the keep ratio. Frames captured in the
first ``--warmup`` seconds are excluded. ``--compare`` runs three modes one after the other on
the same source: ``clip`` (the reference way: the whole 5-frame window through the model for
every frame), ``stream`` (the feature cache) and ``stream+carry`` (plus CIM carry-over), and
prints the ratios. ``--streams N[,N...]``: several streams in one process
(:mod:`stream.measure.multi_bench`, whose ``main`` is the command's entry point).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import zmq

from pcmanet.checkpoint import CheckpointError
from pcmanet.cli import Parser, device_problem, fail
from pcmanet.config import ConfigError, config_to_dict
from stream.capture.base import SourceError
from stream.measure.latency import format_table, report
from stream.run import app
from stream.run.pipeline import PipelineError
from stream.transport.sockets import BindError

MODES = ("clip", "stream", "stream+carry")


def parse_counts(text: str) -> list[int]:
    """--streams "1,2,4" -> [1, 2, 4] (each >= 1)."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--streams {text!r}: integers, e.g. 1,2,4") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--streams {text!r}: each count must be >= 1")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m stream.bench", description=__doc__.split("\n")[0])
    p.add_argument("--source", default="demo", help="demo | FILE | camera index | URL")
    p.add_argument("--mic", help="with a camera source: microphone ('default', name, index)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per mode")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds excluded at the start")
    p.add_argument("--config", action="append", default=[], help="live config file(s)")
    p.add_argument("--set", action="append", default=[], dest="overrides",
                   metavar="KEY=VALUE", help="override, e.g. live.engine.threads=1")
    p.add_argument("--weights", help="checkpoint (default: the demo model)")
    p.add_argument("--device", help="cpu | cuda")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="one mode (default: stream, or stream+carry if the config enables it)")
    p.add_argument("--compare", action="store_true", help="run clip, stream, stream+carry")
    p.add_argument("--json", type=Path, help="write the report(s) as JSON")
    p.add_argument("--plot", type=Path, help="write a PNG: latency over time and histogram")
    p.add_argument("--port", type=int, default=0, help="loopback port (0: a free one)")
    p.add_argument("--streams", type=parse_counts, metavar="N[,N...]",
                   help="several streams in one process: N demo scenes (seeds 0..N-1) or N "
                        "copies of --source FILE; several N: one run each, --plot p99 vs N")
    return p.parse_args(argv)


def source_problem(source: str) -> str | None:
    """Why ``--source`` cannot be measured (one line), or None: demo, a media file, a camera
    index or a URL (``scheme://``)."""
    if source == "demo" or source.isdigit() or "://" in source or Path(source).is_file():
        return None
    return (f"--source {source}: no such media file; give demo, a media file, a camera index "
            "or a URL")


def argument_problem(args: argparse.Namespace) -> str | None:
    """The first flag of a benchmark that cannot work, before anything runs; else None."""
    if not 0 <= args.warmup < float("inf"):
        return f"--warmup {args.warmup:g}: must be >= 0 seconds"
    if not args.warmup < args.duration < float("inf"):
        return f"--duration {args.duration:g}: must exceed --warmup ({args.warmup:g} s)"
    if args.device is not None and (problem := device_problem(args.device)):
        return problem
    for out in (args.json, args.plot):
        if out is not None and not out.parent.is_dir():
            return f"{out}: its folder {out.parent} does not exist"
    return source_problem(args.source)


def pipeline_argv(source: str, url: str, stream: str, duration_s: float, wait_s: float,
                  configs: list[str], overrides: list[str], weights: str | None = None,
                  device: str | None = None, mic: str | None = None) -> list[str]:
    """run_live arguments for a measured run: ``source`` is demo, a media file, or a camera
    index / URL (with ``mic``); the run publishes on ``url`` as ``stream``."""
    argv = ["--zmq", url, "--stream", stream, "--wait-subscriber", f"{wait_s:g}",
            "--duration", f"{duration_s:g}"]
    if source == "demo":
        argv.append("--demo")
    elif Path(source).is_file():
        argv += ["--video", source]
    else:
        argv += ["--camera", source] + (["--mic", mic] if mic else [])
    for c in configs:
        argv += ["--config", c]
    for o in overrides:
        argv += ["--set", o]
    if weights:
        argv += ["--weights", weights]
    if device:
        argv += ["--device", device]
    return argv


def app_args(args: argparse.Namespace, url: str) -> argparse.Namespace:
    """The run_live arguments for this benchmark's source."""
    return app.parse_args(pipeline_argv(args.source, url, "bench", args.duration, 10,
                                        args.config, args.overrides, args.weights,
                                        args.device, args.mic))


def subscriber_process(url: str, topic: str, out: str, stop: Any, ready: Any) -> None:
    """Subscriber process: receive masks of ``topic`` (a prefix: ``mask/`` takes every
    stream's), stamp arrival, write one JSON header per line. Its receive queue is deep, so a
    burst of masks from many streams is stamped rather than dropped."""
    sock = zmq.Context().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.setsockopt(zmq.RCVTIMEO, 100)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.connect(url)
    ready.set()
    records = []
    idle_since = None
    while True:
        try:
            _topic, header, _payload = sock.recv_multipart()
        except zmq.Again:
            if stop.is_set():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 0.5:
                    break
            continue
        rec = json.loads(header)
        rec["t_receive_ns"] = time.monotonic_ns()
        records.append(rec)
    sock.close(linger=0)
    Path(out).write_text("".join(json.dumps(r) + "\n" for r in records))


@contextlib.contextmanager
def subscribed(url: str, topic: str, out: Path, ready_s: float = 30.0,
               join_s: float = 15.0) -> Iterator[list[dict[str, Any]]]:
    """A :func:`subscriber_process` on ``url`` / ``topic`` for the duration of the with-block
    (started and ready before it begins). After a block that ends normally the yielded list
    holds every header it received, arrival-stamped (also kept in ``out``, one per line); on
    an exception the process is killed."""
    ctx = mp.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    sub = ctx.Process(target=subscriber_process, args=(url, topic, str(out), stop, ready),
                      daemon=True)
    sub.start()
    records: list[dict[str, Any]] = []
    try:
        ready.wait(ready_s)
        yield records
        stop.set()
        sub.join(join_s)
    finally:
        if sub.is_alive():
            sub.kill()
    if out.exists():
        records.extend(json.loads(line) for line in out.read_text().splitlines())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_mode(args: argparse.Namespace, mode: str, workdir: Path) -> tuple[dict[str, Any], list]:
    """One benchmark run; returns (report, records)."""
    port = args.port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    a = app_args(args, url)
    cfg = app.resolve_config(a)
    carry = replace(cfg.engine.carry, enabled=mode == "stream+carry")
    # The steady state is measured: a compiled step is compiled before the clock starts.
    cfg = replace(cfg, engine=replace(cfg.engine, carry=carry, compile_wait=True))
    if cfg.engine.compile != "off" and mode != "clip":
        print(f"bench: compiling the engine step first (live.engine.compile="
              f"{cfg.engine.compile}); the clock starts after it", file=sys.stderr)
    out = workdir / f"received_{mode.replace('+', '_')}.jsonl"
    engine_mode = "clip" if mode == "clip" else "stream"
    with subscribed(url, "mask/bench", out) as records, \
            app.live_session(a, cfg, engine_mode=engine_mode) as s:
        t0 = time.monotonic()
        summary = s.pipeline.run()
        span = time.monotonic() - t0
        counters = {**summary.counters, "publisher": s.publisher.counters()}
    captured = int(counters["frame_ring"]["written"])
    pub = counters["publisher"]
    counters["publisher"] = {"published": pub.get("published", 0),
                             "dropped": pub.get("dropped_at_socket", 0)}
    rep = report(records, args.warmup, counters, captured, span, mode,
                 {"source": args.source, "live": config_to_dict(cfg), "model": s.model_name,
                  "input_size": s.size, "device": str(s.device), "duration_s": args.duration})
    return rep, records


def plot(path: Path, runs: list[tuple[dict[str, Any], list]], warmup_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_h) = plt.subplots(1, 2, figsize=(12, 4))
    for rep, records in runs:
        if not records:
            continue
        t0 = min(r["t_capture_ns"] for r in records)
        xs = [(r["t_capture_ns"] - t0) / 1e9 for r in records]
        ys = [(r["t_receive_ns"] - r["t_capture_ns"]) / 1e6 for r in records]
        ax_t.plot(xs, ys, lw=0.8, label=rep["mode"])
        ax_h.hist([y for x, y in zip(xs, ys, strict=True) if x >= warmup_s], bins=50,
                  alpha=0.6, label=rep["mode"])
    ax_t.axvline(warmup_s, color="grey", ls="--", lw=0.8)
    ax_t.set(xlabel="capture time (s)", ylabel="end-to-end latency (ms)",
             title="latency over time (warm-up left of the line)")
    ax_h.set(xlabel="end-to-end latency (ms)", ylabel="masks", title="after warm-up")
    ax_t.legend()
    ax_h.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_ms(rep: dict[str, Any]) -> float:
    """Median model time per frame: preprocess + encode + decode p50."""
    s = rep["stages"]
    return float(s["preprocess"]["p50"] + s["encode"]["p50"] + s["decode"]["p50"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = argument_problem(args)
    if problem is not None:
        return fail(problem)
    if args.streams:  # the command (stream/bench.py) sends these to multi_bench.main
        print("error: --streams: run python -m stream.bench", file=sys.stderr)
        return 2
    if args.compare:
        modes = list(MODES)
    elif args.mode:
        modes = [args.mode]
    else:
        modes = ["stream"]
    import tempfile

    runs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in modes:
                rep, records = run_mode(args, mode, Path(tmp))
                print(format_table(rep), flush=True)
                print()
                runs.append((rep, records))
    except (app.UserError, ConfigError, CheckpointError, SourceError, BindError,
            PipelineError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result: dict[str, Any]
    if args.compare:
        by = {rep["mode"]: rep for rep, _ in runs}
        ratios = {
            "stream_vs_clip_model_time": model_ms(by["stream"]) / model_ms(by["clip"]),
            "carry_vs_clip_model_time": model_ms(by["stream+carry"]) / model_ms(by["clip"]),
            "stream_vs_clip_e2e_p50": by["stream"]["e2e_ms"]["p50"] / by["clip"]["e2e_ms"]["p50"],
        }
        for k, v in ratios.items():
            print(f"{k}: {v:.3f}")
        result = {"runs": [rep for rep, _ in runs], "ratios": ratios}
    else:
        result = runs[0][0]
    if args.json:
        args.json.write_text(json.dumps(_finite(result), indent=1) + "\n")
    if args.plot:
        plot(args.plot, runs, args.warmup)
    return 0


def _finite(obj: Any) -> Any:
    """NaN -> None, so the JSON is standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj

