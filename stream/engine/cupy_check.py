"""Which CuPy wheel fits this torch: CuPy wheels are built per CUDA major (``cupy-cuda12x``,
``cupy-cuda13x``), and one built for another major than torch's fails at its first kernel
launch, or loads a second CUDA runtime beside torch's. Checked before the CUDA preprocessing
uses CuPy, and by ``.ci/check_install.py``.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from collections.abc import Iterable

_WHEEL = re.compile(r"^cupy-cuda(\d+)(x?)$")


def cupy_wheel_for(torch_cuda: str) -> str:
    """'13.0' -> 'cupy-cuda13x': the CuPy wheel for a torch built against that CUDA."""
    return f"cupy-cuda{int(torch_cuda.split('.')[0])}x"


def installed_cupy_wheels() -> list[str]:
    """Names of the installed CuPy distributions (normalised, e.g. ['cupy-cuda13x'])."""
    names = {re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower()
             for d in md.distributions()}
    return sorted(n for n in names if n == "cupy" or n.startswith("cupy-cuda"))


def cupy_mismatch(installed: Iterable[str] | None = None,
                  torch_cuda: str | None = "auto") -> str | None:
    """None when the installed CuPy (if any) matches torch's CUDA major; otherwise a message
    naming the wheel to install instead.

    Args:
        installed: CuPy distribution names; default the installed ones.
        torch_cuda: torch's CUDA version ("13.0"); default ``torch.version.cuda``. None (a CPU
            build of torch) means nothing to match.
    """
    if torch_cuda == "auto":
        import torch

        torch_cuda = torch.version.cuda
    wheels = installed_cupy_wheels() if installed is None else sorted(installed)
    if torch_cuda is None or not wheels:
        return None
    want = cupy_wheel_for(torch_cuda)
    fix = f"pip uninstall -y {' '.join(wheels)} && pip install {want}"
    if len(wheels) > 1:
        return (f"several CuPy packages are installed ({', '.join(wheels)}); they overwrite each "
                f"other. torch is built for CUDA {torch_cuda}: {fix}")
    m = _WHEEL.match(wheels[0])
    if m is None:                       # 'cupy' built from source: it was built for this machine
        return None
    digits, open_minor = m.groups()
    major = int(digits) if open_minor else int(digits[:-1])     # cupy-cuda117 -> 11
    if major == int(torch_cuda.split(".")[0]):
        return None
    return (f"{wheels[0]} (CuPy for CUDA {major}) is installed, but torch is built for CUDA "
            f"{torch_cuda}: {fix} (the '.[gpu]' extra names it)")
