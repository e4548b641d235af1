"""Long run (soak): the live pipeline in real time for N minutes, watched for leaks and drift.

    python -m stream.soak --minutes 10 [--json soak.json] [--source demo] [--interval 60]
                          [--warmup 20] [--sample 5] [--strict]

Runs ``run_live.py``'s own pipeline (``stream.run.app.live_session``) on the source (``demo``: the
synthetic scene at 30 FPS, in real time) with a subscriber in another process (the one of
``stream.bench``), and reports:

* RSS of this process over time (``VmRSS`` from ``/proc/self/status`` every ``--sample`` s),
  and its growth from the first sample after ``--warmup`` to the last;
* per ``--interval`` of the run: masks received, e2e latency (capture -> received) p50 / p99 /
  max, ``seq`` gaps, RSS at its end; the first ``--warmup`` s are left out;
* drops at every counter (frame ring, engine hand-over, socket, audio ring, log-mel frames,
  frame errors), ``seq`` gaps seen by the subscriber and frame-index gaps, and whether each is
  accounted for: every ``seq`` gap by a mask the socket dropped (counted), every missing frame
  by a counted drop anywhere before it.

Targets (docs/design.md 8): RSS growth <= 5 % after warm-up; p99 of the last interval <= 1.2x
the first; every gap accounted for. Each is printed PASS or FAIL; the exit status is 1 on a
FAIL only with ``--strict`` (2 for a user error, as run_live).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pcmanet.checkpoint import CheckpointError
from pcmanet.cli import Parser
from pcmanet.config import ConfigError, config_to_dict
from stream.capture.base import SourceError
from stream.measure.bench import _finite, free_port, pipeline_argv, source_problem, subscribed
from stream.measure.latency import seq_gaps, summarize_ms
from stream.run import app
from stream.run.pipeline import PipelineError
from stream.transport.sockets import BindError

NS_PER_S = 1_000_000_000
TARGETS = {"rss_growth": 0.05, "p99_ratio": 1.2}


def rss_mb() -> float:
    """Resident set size of this process in MiB (``VmRSS``; the peak where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0          # "VmRSS:  123456 kB"
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Sampler(threading.Thread):
    """Every ``period_s``: (t_ns, RSS MiB, counters()) into ``samples``; prints a progress line
    every ``print_every_s``."""

    def __init__(self, period_s: float, counters: Callable[[], Mapping[str, Any]],
                 print_every_s: float, t0_ns: int) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.period_s, self.counters, self.print_every_s = period_s, counters, print_every_s
        self.t0_ns = t0_ns
        self.samples: list[tuple[int, float, dict[str, Any]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        next_print = self.print_every_s
        while True:
            t = time.monotonic_ns()
            self.samples.append((t, rss_mb(), dict(self.counters())))
            elapsed = (t - self.t0_ns) / NS_PER_S
            if elapsed >= next_print:
                next_print += self.print_every_s
                c = self.samples[-1][2]
                print(f"[{elapsed:7.1f} s] RSS {self.samples[-1][1]:7.1f} MiB; published "
                      f"{c.get('publisher', {}).get('published', 0)}; dropped: frame ring "
                      f"{c.get('frame_ring', {}).get('dropped', 0)}, socket "
                      f"{c.get('publisher', {}).get('dropped_at_socket', 0)}",
                      file=sys.stderr, flush=True)
            if self._stop_event.wait(self.period_s):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5.0)
        self.samples.append((time.monotonic_ns(), rss_mb(), dict(self.counters())))


# -- analysis (pure) ---------------------------------------------------------------------------


def frame_gaps(indices: Sequence[int]) -> int:
    """Frames missing between consecutive received masks' frame indices (in seq order)."""
    ordered = sorted(set(indices))
    return sum(b - a - 1 for a, b in itertools.pairwise(ordered))


def intervals(records: Sequence[Mapping[str, Any]], rss: Sequence[tuple[float, float]],
              t0_ns: int, interval_s: float, warmup_s: float, duration_s: float
              ) -> list[dict[str, Any]]:
    """Per interval [k I, (k+1) I) of capture time since ``t0_ns``: masks, e2e p50/p99/max,
    seq gaps, RSS at its end. Records before ``warmup_s`` are left out; a last interval shorter
    than half of ``interval_s`` is dropped."""
    out: list[dict[str, Any]] = []
    k = 0
    while k * interval_s < duration_s:
        a, b = k * interval_s, min((k + 1) * interval_s, duration_s)
        k += 1
        if b - a < interval_s / 2 and out:
            break
        lo, hi = t0_ns + round(max(a, warmup_s) * NS_PER_S), t0_ns + round(b * NS_PER_S)
        if lo >= hi:
            continue
        rs = [r for r in records if lo <= int(r["t_capture_ns"]) < hi]
        e2e = summarize_ms([(int(r["t_receive_ns"]) - int(r["t_capture_ns"])) / 1e6 for r in rs])
        at_end = [m for t, m in rss if t <= b]
        out.append({"t_start_s": a, "t_end_s": b, "masks": len(rs),
                    "e2e_p50_ms": e2e["p50"], "e2e_p99_ms": e2e["p99"], "e2e_max_ms": e2e["max"],
                    "seq_gaps": seq_gaps([int(r["seq"]) for r in rs]),
                    "rss_mb": at_end[-1] if at_end else None})
    return out


def analyse(records: Sequence[Mapping[str, Any]], samples: Sequence[tuple[int, float]],
            counters: Mapping[str, Any], *, t0_ns: int, duration_s: float, interval_s: float,
            warmup_s: float) -> dict[str, Any]:
    """The soak report from the received records (headers + ``t_receive_ns``), RSS samples
    ``(t_ns, MiB)`` and the final counters (pipeline's, plus ``publisher``)."""
    rss = [((t - t0_ns) / NS_PER_S, mb) for t, mb in samples]
    warm = [mb for t, mb in rss if t >= warmup_s] or [mb for _, mb in rss[-1:]]
    rss_warm, rss_last = (warm[0], warm[-1]) if warm else (float("nan"), float("nan"))
    per = intervals(records, rss, t0_ns, interval_s, warmup_s, duration_s)
    p99 = [iv["e2e_p99_ms"] for iv in per if iv["masks"] > 0]
    ratio = p99[-1] / p99[0] if len(p99) >= 2 and p99[0] > 0 else float("nan")
    pub = counters.get("publisher", {})
    engine = counters.get("engine", {})
    published = int(pub.get("published", 0))
    drops = {
        "frame_ring": int(counters.get("frame_ring", {}).get("dropped", 0)),
        "handoff": int(engine.get("handoff_dropped", 0)),
        "frame_errors": int(engine.get("frame_errors", 0)),
        "socket": int(pub.get("dropped_at_socket", 0)),
        "audio_ring_samples": int(counters.get("audio_ring", {}).get("dropped", 0)),
        "mel_frames_skipped": int(counters.get("mel_ring", {}).get("skipped", 0)),
    }
    seqs = [int(r["seq"]) for r in records]
    gaps = seq_gaps(seqs)
    missing_frames = frame_gaps([int(r["frame_index"]) for r in records])
    frame_drops = drops["frame_ring"] + drops["handoff"] + drops["frame_errors"] + drops["socket"]
    accounting = {
        "published": published, "received": len(records),
        "seq_gaps": gaps, "dropped_at_socket": drops["socket"],
        "unexplained_seq_gaps": max(0, gaps - drops["socket"]),
        "not_received_after_last": max(0, published - 1 - max(seqs)) if seqs else published,
        "frame_gaps": missing_frames, "frame_drops_counted": frame_drops,
        "unexplained_frame_gaps": max(0, missing_frames - frame_drops),
    }
    growth = (rss_last - rss_warm) / rss_warm if rss_warm == rss_warm and rss_warm > 0 \
        else float("nan")
    targets: dict[str, dict[str, Any]] = {
        "rss_growth": {"value": growth, "limit": TARGETS["rss_growth"],
                       "pass": bool(growth <= TARGETS["rss_growth"])},
        "p99_ratio": {"value": ratio, "limit": TARGETS["p99_ratio"],
                      "pass": bool(ratio <= TARGETS["p99_ratio"])},
        "gaps_accounted": {"value": accounting["unexplained_seq_gaps"]
                           + accounting["unexplained_frame_gaps"], "limit": 0,
                           "pass": accounting["unexplained_seq_gaps"] == 0
                           and accounting["unexplained_frame_gaps"] == 0 and len(records) > 0},
    }
    return {
        "duration_s": duration_s, "interval_s": interval_s, "warmup_s": warmup_s,
        "intervals": per,
        "rss_mb": {"samples": [[round(t, 2), round(mb, 2)] for t, mb in rss],
                   "after_warmup": rss_warm, "last": rss_last,
                   "max": max((mb for _, mb in rss), default=float("nan")), "growth": growth},
        "p99_ratio_last_first": ratio,
        "drops": drops, "accounting": accounting, "targets": targets,
        "pass": all(t["pass"] for t in targets.values()),
    }


def format_report(rep: Mapping[str, Any]) -> str:
    """A table per interval, the drops, and PASS/FAIL per target, for people."""
    lines = [f"{'interval (s)':>14s} {'masks':>6s} {'p50':>7s} {'p99':>7s} {'max':>7s} "
             f"{'gaps':>5s} {'RSS MiB':>8s}"]
    for iv in rep["intervals"]:
        rss = "-" if iv["rss_mb"] is None else f"{iv['rss_mb']:.1f}"
        lines.append(f"{iv['t_start_s']:6.0f}-{iv['t_end_s']:<7.0f} {iv['masks']:6d} "
                     f"{iv['e2e_p50_ms']:7.1f} {iv['e2e_p99_ms']:7.1f} {iv['e2e_max_ms']:7.1f} "
                     f"{iv['seq_gaps']:5d} {rss:>8s}")
    r = rep["rss_mb"]
    lines.append(f"RSS: {r['after_warmup']:.1f} MiB after warm-up -> {r['last']:.1f} MiB at the "
                 f"end (max {r['max']:.1f})")
    lines.append("drops: " + ", ".join(f"{k} {v}" for k, v in rep["drops"].items()))
    a = rep["accounting"]
    lines.append(f"accounting: published {a['published']}, received {a['received']}, seq gaps "
                 f"{a['seq_gaps']} vs socket drops {a['dropped_at_socket']}; frame gaps "
                 f"{a['frame_gaps']} vs counted drops {a['frame_drops_counted']}")
    names = {"rss_growth": "RSS growth after warm-up", "p99_ratio": "p99 last / first interval",
             "gaps_accounted": "unexplained gaps"}
    for key, t in rep["targets"].items():
        value = t["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{'PASS' if t['pass'] else 'FAIL'}  {names[key]}: {shown} "
                     f"(limit {t['limit']})")
    return "\n".join(lines)


# -- the run -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m stream.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="how long to run")
    p.add_argument("--source", default="demo", help="demo | FILE | camera index | URL")
    p.add_argument("--interval", type=float, default=60.0, help="seconds per reported interval")
    p.add_argument("--warmup", type=float, default=20.0,
                   help="seconds left out of latency and RSS growth at the start")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--json", type=Path, help="write the report as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument("--config", action="append", default=[], help="live config file(s)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument("--weights", help="checkpoint (default: the demo model)")
    return p.parse_args(argv)


def live_args(args: argparse.Namespace, url: str) -> argparse.Namespace:
    """The run_live arguments for the soak's source."""
    return app.parse_args(pipeline_argv(args.source, url, "soak", args.minutes * 60, 30,
                                        args.config, args.overrides, args.weights))


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    url = f"tcp://127.0.0.1:{free_port()}"
    a = live_args(args, url)
    cfg = app.resolve_config(a)
    out = workdir / "received.jsonl"
    with subscribed(url, "mask/soak", out, ready_s=60, join_s=30) as records, \
            app.live_session(a, cfg) as s:
        def counters() -> dict[str, Any]:
            return {**s.pipeline.counters(), "publisher": s.publisher.counters()}

        t0 = time.monotonic_ns()
        sampler = Sampler(args.sample, counters, args.interval, t0)
        sampler.start()
        try:
            s.pipeline.run()
        finally:
            sampler.stop()
        duration_s = (time.monotonic_ns() - t0) / NS_PER_S
        final = counters()
    rep = analyse(records, [(t, mb) for t, mb, _ in sampler.samples], final, t0_ns=t0,
                  duration_s=duration_s, interval_s=args.interval, warmup_s=args.warmup)
    rep["config"] = {"source": args.source, "minutes": args.minutes, "model": s.model_name,
                     "live": config_to_dict(cfg)}
    return rep


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name, value in (("--minutes", args.minutes), ("--interval", args.interval),
                        ("--sample", args.sample)):
        if not 0 < value < float("inf"):
            print(f"error: {name} {value:g}: must be > 0", file=sys.stderr)
            return 2
    if args.warmup < 0 or args.warmup >= args.minutes * 60:
        print(f"error: --warmup {args.warmup:g}: must be >= 0 seconds and shorter than the run "
              f"({args.minutes * 60:g} s)", file=sys.stderr)
        return 2
    problem = source_problem(args.source)
    if problem is None and args.json is not None and not args.json.parent.is_dir():
        problem = f"{args.json}: its folder {args.json.parent} does not exist"
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rep = run(args, Path(tmp))
    except (app.UserError, ConfigError, CheckpointError, SourceError, BindError,
            PipelineError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(rep), flush=True)  # after the sampler's progress lines (stderr)
    if args.json:
        args.json.write_text(json.dumps(_finite(rep), indent=1) + "\n")
    return 1 if args.strict and not rep["pass"] else 0

