"""Measure: how fast and how steady the live pipeline runs (docs/design.md section 8).

* ``latency``: per-stage latency statistics and the report table, shared by the tools here.
* ``bench``: the latency benchmark behind ``python -m stream.bench``.
* ``soak``: the long run behind ``python -m stream.soak`` (leaks, drift, drops).
"""
