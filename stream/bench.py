"""``python -m stream.bench``: the latency benchmark (DESIGN.md section 8).

The command only; the benchmark: :mod:`stream.measure.bench`.
"""

from stream.measure.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
