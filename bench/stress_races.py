"""Run the scheduling-sensitive tests (``-m races``) many times while other processes keep
every core busy, and count the failures: a test that fails only under load decides its outcome
by timing, not by the code under test.

    python bench/stress_races.py --count 50                      # every `races` test, 50 times
    python bench/stress_races.py --count 50 tests/stream/test_buffers.py --json out.json

Each repetition is a separate pytest item (pytest-repeat), so a flaky test shows up as a count
of failed repetitions. The load is ``--load`` busy processes (default: one per core), niced
to 0 like the tests, started before pytest and stopped after it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


def burn(stop: mp.synchronize.Event) -> None:
    """Keep one core busy until ``stop`` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def base_id(node_id: str) -> str:
    """'t.py::test[a-3-50]' -> 't.py::test[a]', 't.py::test[3-50]' -> 't.py::test'."""
    return re.sub(r"-\d+-\d+\]$", "]", re.sub(r"\[\d+-\d+\]$", "", node_id))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="*", default=["tests"], help="test paths (default tests)")
    p.add_argument("--count", type=int, default=50, help="repetitions of each test")
    p.add_argument("--load", type=int, default=os.cpu_count() or 2,
                   help="busy processes beside the tests (default: one per core)")
    p.add_argument("-k", dest="keyword", help="pytest -k expression")
    p.add_argument("--json", type=Path, help="write the summary here")
    p.add_argument("--log", type=Path, help="append pytest's output here as it runs")
    args = p.parse_args(argv)

    stop = mp.Event()
    burners = [mp.Process(target=burn, args=(stop,), daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "races",
           "--count", str(args.count), "-rfE", *args.paths]
    if args.keyword:
        cmd += ["-k", args.keyword]
    t0, lines = time.monotonic(), []
    try:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:                     # progress as pytest prints it
                lines.append(line)
                if args.log:
                    with args.log.open("a") as f:
                        f.write(line)
        returncode = proc.returncode
    finally:
        stop.set()
        for b in burners:
            b.join(5)
    elapsed = time.monotonic() - t0
    out = "".join(lines)
    failed = Counter(base_id(m.group(1))
                     for m in re.finditer(r"^(?:FAILED|ERROR) (\S+)", out, re.M))
    last = out.strip().splitlines()[-1] if out.strip() else ""
    summary = {"count": args.count, "load": args.load, "paths": args.paths,
               "keyword": args.keyword, "seconds": round(elapsed, 1), "pytest_exit": returncode,
               "load_average_1m_at_end": round(os.getloadavg()[0], 2),
               "summary": last, "failed_repetitions": dict(failed),
               "failures": sum(failed.values())}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if returncode not in (0, 1, 5):
        print(out[-3000:], file=sys.stderr)
    return 0 if summary["failures"] == 0 and returncode in (0, 5) else 1


if __name__ == "__main__":
    sys.exit(main())
