"""Command-line parsing shared by every entry point: a mistake is one ``error:`` line.

argparse's own refusals (an unknown flag, a value of the wrong type, a missing argument) print a
usage block and ``PROG: error: ...``; :class:`Parser` prints only ``error: ...`` with the
pointer to ``--help`` and exits 2, the same line every check of our own gives. Importing this
module loads neither torch nor the model.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def fail(message: str) -> int:
    """Print ``error: MESSAGE`` on stderr and return exit code 2 (for ``return fail(...)``)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def device_problem(name: str, flag: str = "--device") -> str | None:
    """Why ``name`` cannot be the device to run on (one line naming it and the fix), or None.
    Only ``cpu`` and ``cuda[:N]`` are accepted; ``cuda`` must be available."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"{flag} {name}: not a device; use cpu, cuda or cuda:N"
    if device.type not in ("cpu", "cuda"):
        return f"{flag} {name}: only cpu and cuda are supported; use cpu, cuda or cuda:N"
    if device.type == "cuda" and not torch.cuda.is_available():
        return (f"{flag} {name}: CUDA is not available here (torch.cuda.is_available() is "
                "False); use --device cpu")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        return (f"{flag} {name}: there are {torch.cuda.device_count()} CUDA devices here; "
                "use cuda:0 .. cuda:N-1")
    return None
