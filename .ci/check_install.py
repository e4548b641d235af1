"""Checks the installed environment against constraints.txt before the tests run.

* every pinned distribution that is installed has exactly the pinned version, and every pinned
  one except the optional extras is installed;
* every top-level module of every pinned distribution imports (a wheel that installs but cannot
  load, like torchaudio 2.11.1 beside torch 2.11.0, fails here and not in the middle of the suite);
* torchaudio's compiled extension is loaded and runs an op;
* CuPy, where installed, matches torch's CUDA major.

Usage: python .ci/check_install.py [constraints.txt]. Exit 1 with one line per problem.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import re
import sys
from pathlib import Path

OPTIONAL = {"cupy-cuda13x"}                   # extras: checked only when installed
# Top-level names that are not modules to import on their own (namespace roots of CUDA wheels,
# tool-only packages whose import has side effects or needs a GPU driver).
SKIP_MODULES = {"nvidia", "cuda", "triton", "_pytest", "py", "mypyc", "__editable__"}
# A missing system library is the machine's business, not the lock's: say how to install it.
SYSTEM_LIBS = {"sounddevice": "PortAudio (apt-get install libportaudio2)"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            if not version:
                raise SystemExit(f"{path}: '{line}' is not an exact pin (NAME==VERSION)")
            pins[norm(name)] = version.strip()
    return pins


def check_versions(pins: dict[str, str]) -> list[str]:
    problems = []
    for name, want in pins.items():
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            if name not in OPTIONAL:
                problems.append(f"{name}: not installed (pinned {want})")
            continue
        if have.split("+")[0] != want.split("+")[0]:
            problems.append(f"{name}: {have} installed, constraints.txt pins {want}")
    return problems


def check_imports(pins: dict[str, str]) -> tuple[list[str], list[str]]:
    problems, warnings = [], []
    by_dist: dict[str, set[str]] = {}
    for module, dists in md.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(norm(dist), set()).add(module)
    for name in sorted(pins):
        for module in sorted(by_dist.get(name, ())):
            if module in SKIP_MODULES or module.startswith("_") or not module.isidentifier():
                continue
            try:
                importlib.import_module(module)
            except Exception as e:
                line = f"{name}: import {module} failed: {type(e).__name__}: {e}"
                if module in SYSTEM_LIBS and isinstance(e, OSError):
                    warnings.append(f"{line}; needs {SYSTEM_LIBS[module]}")
                else:
                    problems.append(line)
    return problems, warnings


def check_torchaudio() -> list[str]:
    import torch

    try:
        import torchaudio._extension as ext
        import torchaudio.functional as AF
    except Exception as e:
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        return [f"torchaudio: does not load beside torch {torch.__version__}: {e}{cause}"]

    if not ext._IS_TORCHAUDIO_EXT_AVAILABLE:
        return ["torchaudio: its compiled extension (_torchaudio) did not load"]
    x = torch.linspace(-1, 1, 64)[None]
    y = AF.lfilter(x, torch.tensor([1.0, -0.5]), torch.tensor([1.0, 0.0]), clamp=False)
    expected = x.clone()                                    # y[n] = x[n] + 0.5 y[n-1]
    for n in range(1, x.shape[1]):
        expected[0, n] += 0.5 * expected[0, n - 1]
    if not torch.allclose(y, expected, atol=1e-5):
        return ["torchaudio: lfilter (a compiled op) computed a wrong result"]
    return []


def check_cupy() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from stream.engine.cupy_check import cupy_mismatch

    message = cupy_mismatch()
    return [message] if message else []


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "constraints.txt"
    pins = read_pins(path)
    problems = check_versions(pins)
    import_problems, warnings = check_imports(pins)
    problems += import_problems + check_torchaudio() + check_cupy()
    for line in warnings:
        print(f"check_install: warning: {line}", file=sys.stderr)
    for line in problems:
        print(f"check_install: {line}", file=sys.stderr)
    if problems:
        print(f"check_install: {len(problems)} problem(s); reinstall with "
              f"`pip install -c constraints.txt -e \".[dev]\"`", file=sys.stderr)
        return 1
    print(f"check_install: {len(pins)} pins match, every pinned package imports, "
          f"torchaudio's extension runs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
