"""The pinned install: README's set-up command and CI install the same tested set
(constraints.txt), and the install check catches an environment that drifted from it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / ".ci" / "check_install.py"


def load_check() -> ModuleType:
    """.ci/check_install.py as a module (it is a script, not in a package)."""
    spec = importlib.util.spec_from_file_location("check_install", CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_constraint_is_exact_and_the_torch_trio_agrees_with_pyproject() -> None:
    locked = load_check().read_pins(ROOT / "constraints.txt")  # exits on a pin that is not ==
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name in ("torch", "torchvision", "torchaudio"):
        m = re.search(rf'"{name}==([^"]+)"', pyproject)
        assert m, f"pyproject.toml must pin {name} exactly"
        assert locked[name] == m.group(1), (name, locked[name], m.group(1))
    gpu = re.search(r'gpu = \["([a-z0-9-]+)', pyproject)
    assert gpu and gpu.group(1) in locked, "the gpu extra's CuPy must be pinned too"


def test_readme_and_ci_install_through_the_constraints() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = next(ln for ln in readme.splitlines() if ln.startswith("python3 -m venv"))
    assert 'pip install -c constraints.txt -e ".[dev]"' in setup
    ci = (ROOT / ".ci" / "run").read_text()
    assert '--no-cache-dir -c constraints.txt -e ".[dev]"' in ci
    assert "python .ci/check_install.py" in ci
    assert "python -m pytest -q" in readme and "python -m pytest -q" in ci


def test_install_check_passes_here_and_names_a_drifted_pin(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, str(CHECK)], capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr
    text = (ROOT / "constraints.txt").read_text()
    drifted = tmp_path / "constraints.txt"
    drifted.write_text(re.sub(r"(?m)^numpy==.*$", "numpy==1.0.0", text)
                       + "\nno-such-package-pcmanet==1.0\n")
    bad = subprocess.run([sys.executable, str(CHECK), str(drifted)], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1
    assert "numpy: " in bad.stderr and "constraints.txt pins 1.0.0" in bad.stderr
    assert "no-such-package-pcmanet: not installed (pinned 1.0)" in bad.stderr
