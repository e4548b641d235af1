"""``python -m stream.bench``: the latency benchmark (docs/design.md section 8).

The command only; the benchmark: :mod:`stream.measure.bench` (one stream, modes) and
:mod:`stream.measure.multi_bench` (``--streams``).
"""

from stream.measure.multi_bench import main

if __name__ == "__main__":
    raise SystemExit(main())
