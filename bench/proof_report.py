"""The GPU proof's targets (issue 21, H200) and its Markdown table (``bench/gpu_proof.py``).

A target reads one figure of the report; ``met`` is None where it does not apply (a CPU run,
or the section failed or did not run): the targets are the GPU's, a CPU run only shows that
every figure is produced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (what, section, figure path, comparison, bound)
TARGETS: list[tuple[str, str, tuple[str, ...], str, float]] = [
    ("demo step p50 ms, graphed bf16", "step", ("demo", "bf16", "graphed_ms", "p50"), "<=", 1.0),
    ("R50 step p50 ms, graphed bf16", "step", ("resnet50", "bf16", "graphed_ms", "p50"), "<=",
     2.0),
    ("PVT step p50 ms, graphed bf16", "step", ("pvt_v2_b5", "bf16", "graphed_ms", "p50"), "<=",
     5.0),
    ("30 FPS live e2e p99 ms (60 s)", "live", ("fps30", "e2e_p99_ms"), "<=", 15.0),
    ("30 FPS live drops (60 s)", "live", ("fps30", "drops"), "<=", 0),
    ("240 FPS source: FPS out", "live", ("fps240", "fps_out"), ">=", 200.0),
    ("32 streams: FPS out, slowest stream", "live", ("streams32", "min_stream_fps_out"), ">=",
     29.5),
    ("32 streams: p99 ms, worst stream", "live", ("streams32", "worst_stream_p99_ms"), "<=",
     50.0),
    ("64 streams: FPS out, slowest stream", "live", ("streams64", "min_stream_fps_out"), ">=",
     25.0),
]
COMPARE: dict[str, Callable[[float, float], bool]] = {"<=": lambda v, b: v <= b,
                                                       ">=": lambda v, b: v >= b}


def _get(figures: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(figures, dict) or key not in figures:
            return None
        figures = figures[key]
    return float(figures) if isinstance(figures, (int, float)) else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its value and whether it is met (None: not applicable here)."""
    out = []
    gpu = report.get("device") == "cuda" and not report.get("quick")
    for what, section, path, op, bound in TARGETS:
        entry = report["sections"].get(section, {})
        value = _get(entry.get("figures"), path)
        met = COMPARE[op](value, bound) if gpu and value is not None else None
        out.append({"what": what, "value": value, "target": f"{op} {bound:g}", "met": met})
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def markdown(report: dict[str, Any]) -> str:
    """The table: targets, then each section's main figures and time."""
    lines = [f"# GPU proof: {report.get('gpu') or report['device']}"
             f"{' (quick)' if report.get('quick') else ''}, torch {report['torch']}, "
             f"{report['started']}", "",
             f"Total {report['seconds']:.0f} s (budget {report['budget_s']} s).", ""]
    if report["device"] != "cuda":
        lines += ["On the CPU, \"graphed\" is the same static-buffer step run directly (no "
                  "CUDA graph); the targets are a GPU's (n/a here).", ""]
    lines += ["| target | value | bound | met |", "|---|---|---|---|"]
    for t in report.get("targets", []):
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['what']} | {_fmt(t['value'])} | {t['target']} | {met} |")
    lines += ["", "| section | ok | s | figures |", "|---|---|---|---|"]
    for name, s in report["sections"].items():
        figs = s.get("figures") or {}
        lines.append(f"| {name} | {'yes' if s['ok'] else '**FAILED**'} | {s['seconds']:.0f} | "
                     f"{_summary(name, figs) if s['ok'] else s.get('error', '')[:200]} |")
    return "\n".join(lines) + "\n"


def _summary(name: str, f: dict[str, Any]) -> str:
    """One cell of figures per section."""
    if name == "cuda_tests":
        return f"{f['passed']} passed, {f['skipped']} skipped, {f['failures']} failed"
    if name == "step":
        cells = []
        for model, per in f.items():
            label = model if per["backbone"] == model else f"{model} ({per['backbone']} here)"
            for prec in ("fp32", "bf16"):
                r = per[prec]
                cells.append(f"{label} {prec} p50 eager {_fmt(r['eager_ms']['p50'])} / graphed "
                             f"{_fmt(r['graphed_ms']['p50'])} ms")
        return "; ".join(cells)
    if name == "buckets":
        return f"{f['model']} {f['precision']} frames/s: " + ", ".join(
            f"P={p} {_fmt(v)}" for p, v in f["frames_per_s"].items())
    if name == "overlap":
        return (f"max in flight {f['max_in_flight']}, hidden copy share "
                f"{_fmt(f['hidden_copy_share'])}, {_fmt(f['frames_per_s'])} frames/s, "
                f"copy-in/compute/copy-out {_fmt(f['copy_in_ms_mean'])}/"
                f"{_fmt(f['compute_ms_mean'])}/{_fmt(f['copy_out_ms_mean'])} ms")
    if name == "live":
        cells = []
        for run, r in f.items():
            if r["streams"] == 1:
                cells.append(f"{run}: out {_fmt(r['fps_out'])} FPS ({_fmt(r['fps_in'])} in), "
                             f"p99 {_fmt(r['e2e_p99_ms'])} ms, drops {r['drops']}")
            else:
                cells.append(f"{run} ({r['streams']}): slowest {_fmt(r['min_stream_fps_out'])} "
                             f"FPS out ({_fmt(r['min_stream_fps_in'])} in), worst p99 "
                             f"{_fmt(r['worst_stream_p99_ms'])} ms")
        return "; ".join(cells)
    if name == "training":
        return (f"{f['steps']} steps {f['precision']}, {_fmt(f['steps_per_s'])} steps/s "
                f"({f['image_size']} px)")
    return ""
