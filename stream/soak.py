"""``python -m stream.soak``: the live pipeline for N minutes, watched for leaks and drift.

The command only; the soak run and its report: :mod:`stream.measure.soak`.
"""

from stream.engine.compiled import exit_code
from stream.measure.soak import main

if __name__ == "__main__":
    raise SystemExit(exit_code(main()))
