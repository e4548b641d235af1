"""Overlap evidence from per-frame stage intervals: frames in flight over time, copy time hidden.

A timeline is one :class:`FrameSpan` per frame: the (start, end) in ms of its copy-in, compute
and copy-out, on one clock (CUDA timing events on a GPU, ``perf_counter`` on the CPU; see
:class:`~stream.engine.gpu_pipeline.StreamRunner` with ``timeline=True``).

* :func:`in_flight_curve`: (t_ms, frames in flight) at every start and end (a frame is in
  flight from its copy-in's start to its copy-out's end);
* :func:`hidden_copy_share`: the share of all copy time (in and out) that ran while another
  frame's compute ran: 0 when the stages run in sequence (the CPU), up to 1 when every copy is
  hidden under compute.
"""

from __future__ import annotations

from dataclasses import dataclass

Interval = tuple[float, float]
STAGES = ("copy_in", "compute", "copy_out")


@dataclass(frozen=True)
class FrameSpan:
    """One frame's stage intervals (start_ms, end_ms), in pipeline order."""

    copy_in: Interval
    compute: Interval
    copy_out: Interval

    @property
    def span(self) -> Interval:
        return self.copy_in[0], self.copy_out[1]


def in_flight_curve(spans: list[FrameSpan]) -> list[tuple[float, int]]:
    """(t_ms, frames in flight just after t) at every frame start and end, in time order; a
    frame ending at t is counted out before one starting at t is counted in."""
    edges = sorted([(s.span[1], -1) for s in spans] + [(s.span[0], 1) for s in spans])
    curve, n = [], 0
    for t, d in edges:
        n += d
        curve.append((t, n))
    return curve


def max_in_flight(spans: list[FrameSpan]) -> int:
    return max((n for _, n in in_flight_curve(spans)), default=0)


def _overlap(a: Interval, b: Interval) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _union(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def hidden_copy_share(spans: list[FrameSpan]) -> float:
    """Copy time (copy-in and copy-out of every frame) that overlaps another frame's compute,
    over all copy time; 0.0 when there is no copy time."""
    total = hidden = 0.0
    for i, s in enumerate(spans):
        others = _union([o.compute for j, o in enumerate(spans) if j != i])
        for copy in (s.copy_in, s.copy_out):
            total += copy[1] - copy[0]
            hidden += sum(_overlap(copy, c) for c in others)
    return hidden / total if total > 0 else 0.0


def summary(spans: list[FrameSpan]) -> dict[str, float]:
    """Figures for a report: frames, max in flight, hidden copy share, mean stage ms."""
    n = len(spans)
    out: dict[str, float] = {"frames": n, "max_in_flight": max_in_flight(spans),
                             "hidden_copy_share": hidden_copy_share(spans)}
    for stage in STAGES:
        out[f"{stage}_ms_mean"] = (sum(getattr(s, stage)[1] - getattr(s, stage)[0]
                                       for s in spans) / n) if n else 0.0
    return out
