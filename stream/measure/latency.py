"""Latency statistics for the benchmark (docs/design.md 8): stages from header timestamps,
percentiles, warm-up exclusion, drop accounting.

A *record* is one received mask: its header (with the pipeline's stage timestamps) plus
``t_receive_ns``, when the subscriber process got it. Stages, each a difference of two
timestamps on the pipeline clock:

=============  =========================================================================
queue          capture -> the engine took the frame (waiting in the frame ring)
pairing        -> paired with its audio window (log-mel update; `exact`: waiting for late audio)
preprocess     uint8 BGR -> model input
encode         per-frame features (clip mode: the whole window's model run)
decode         cross-frame decode of the newest frame (clip mode: 0)
publish        -> sent (hand-over queue, payload encoding)
transport      sent -> received by the subscriber process
e2e            capture -> received
=============  =========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

STAGES: dict[str, tuple[str, str]] = {
    "queue": ("t_capture_ns", "t_dequeue_ns"),
    "pairing": ("t_dequeue_ns", "t_paired_ns"),
    "preprocess": ("t_preprocess_start_ns", "t_encode_start_ns"),
    "encode": ("t_encode_start_ns", "t_decode_start_ns"),
    "decode": ("t_decode_start_ns", "t_decode_end_ns"),
    "publish": ("t_decode_end_ns", "t_publish_ns"),
    "transport": ("t_publish_ns", "t_receive_ns"),
    "e2e": ("t_capture_ns", "t_receive_ns"),
}
PERCENTILES = (50, 95, 99)


def summarize_ms(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max / mean of millisecond samples (linear-interpolated percentiles,
    numpy's default); NaN everywhere for no samples."""
    if len(samples_ms) == 0:
        return {**{f"p{p}": float("nan") for p in PERCENTILES}, "max": float("nan"),
                "mean": float("nan")}
    a = np.asarray(samples_ms, dtype=np.float64)
    out = {f"p{p}": float(np.percentile(a, p)) for p in PERCENTILES}
    return {**out, "max": float(a.max()), "mean": float(a.mean())}


def after_warmup(records: Sequence[Mapping[str, Any]], warmup_s: float
                 ) -> list[Mapping[str, Any]]:
    """Records whose frame was captured at least ``warmup_s`` after the first record's."""
    if not records:
        return []
    t0 = min(int(r["t_capture_ns"]) for r in records)
    cut = t0 + round(warmup_s * 1e9)
    return [r for r in records if int(r["t_capture_ns"]) >= cut]


def stage_samples(records: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per stage, its duration in ms for every record that has both timestamps."""
    out: dict[str, list[float]] = {name: [] for name in STAGES}
    for r in records:
        for name, (a, b) in STAGES.items():
            if a in r and b in r:
                out[name].append((int(r[b]) - int(r[a])) / 1e6)
    return out


def seq_gaps(seqs: Sequence[int]) -> int:
    """Masks missing between the first and last received seq (received in order)."""
    if len(seqs) < 2:
        return 0
    ordered = sorted(set(seqs))
    return int(ordered[-1] - ordered[0] + 1 - len(ordered))


def fps(records: Sequence[Mapping[str, Any]], key: str) -> float:
    """Rate of ``key`` timestamps over their span (n - 1 intervals); 0 for < 2 records."""
    if len(records) < 2:
        return 0.0
    times = sorted(int(r[key]) for r in records)
    span = (times[-1] - times[0]) / 1e9
    return (len(times) - 1) / span if span > 0 else 0.0


def report(records: Sequence[Mapping[str, Any]], warmup_s: float, counters: Mapping[str, Any],
           frames_captured: int, capture_span_s: float, mode: str, config: Mapping[str, Any]
           ) -> dict[str, Any]:
    """The benchmark's JSON object (fields of issue 5 / docs/design.md 8).

    counters: the pipeline's counters at the end (buffers, sources, publisher).
    frames_captured, capture_span_s: what the source delivered, for ``fps_in``.
    """
    kept = after_warmup(records, warmup_s)
    stages = {name: summarize_ms(v) for name, v in stage_samples(kept).items()}
    e2e = stages.pop("e2e")
    received_seqs = [int(r["seq"]) for r in records]
    published = int(counters.get("publisher", {}).get("published", len(records)))
    drops = {
        "frame_ring": int(counters.get("frame_ring", {}).get("dropped", 0)),
        "handoff": int(counters.get("engine", {}).get("handoff_dropped", 0)),
        "socket": int(counters.get("publisher", {}).get("dropped", 0)),
        "audio_ring_samples": int(counters.get("audio_ring", {}).get("dropped", 0)),
        "mel_frames_skipped": int(counters.get("mel_ring", {}).get("skipped", 0)),
        "seq_gaps_at_subscriber": seq_gaps(received_seqs),
        "not_received": max(0, published - len(records)),
        "frame_errors": int(counters.get("engine", {}).get("frame_errors", 0)),
    }
    keep = [float(r["keep_ratio"]) for r in kept if "keep_ratio" in r]
    lags = [float(r["audio_lag_ms"]) for r in kept if r.get("audio") == "paired"
            and "audio_lag_ms" in r]
    outcomes = counters.get("pairing", {})
    pairing = {**{k: int(v) for k, v in outcomes.items() if not k.endswith("_ns_total")
                  and not k.endswith("_ns_max")},
               "wait_ms_total": outcomes.get("wait_ns_total", 0) / 1e6,
               "wait_ms_max": outcomes.get("wait_ns_max", 0) / 1e6,
               "audio_lag_ms": summarize_ms(lags) if lags else None}
    return {
        "mode": mode,
        "fps_in": frames_captured / capture_span_s if capture_span_s > 0 else 0.0,
        "fps_out": fps(kept, "t_receive_ns"),
        "e2e_ms": e2e,
        "stages": stages,
        "drops": drops,
        "pairing": pairing,
        "keep_ratio": float(np.mean(keep)) if keep else float("nan"),
        "frames": {"captured": frames_captured, "received": len(records),
                   "after_warmup": len(kept), "warmup_s": warmup_s},
        "config": dict(config),
    }


def format_table(rep: Mapping[str, Any]) -> str:
    """A table for people."""
    lines = [f"mode {rep['mode']}: fps in {rep['fps_in']:.1f}, out {rep['fps_out']:.1f}; "
             f"keep ratio {rep['keep_ratio']:.3f}; {rep['frames']['after_warmup']} frames after "
             f"{rep['frames']['warmup_s']:g} s warm-up",
             f"{'stage (ms)':12s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}"]
    rows = {**rep["stages"], "END TO END": rep["e2e_ms"]}
    for name, s in rows.items():
        lines.append(f"{name:12s} {s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} {s['max']:8.2f}")
    drops = ", ".join(f"{k} {v}" for k, v in rep["drops"].items())
    lines.append(f"drops: {drops}")
    pairing = rep.get("pairing") or {}
    if pairing.get("paired"):
        outcomes = ", ".join(f"{k} {pairing.get(k, 0)}" for k in
                             ("on_time", "lagged", "late", "no_audio", "unavailable"))
        lag = pairing.get("audio_lag_ms")
        lag_text = (f"; audio lag (paired masks) p50 {lag['p50']:.0f} / p99 {lag['p99']:.0f} / "
                    f"max {lag['max']:.0f} ms" if lag else "")
        lines.append(f"pairing: {outcomes}; waited {pairing['wait_ms_total']:.0f} ms in all "
                     f"(max {pairing['wait_ms_max']:.1f}){lag_text}")
    return "\n".join(lines)
