"""The output folder of a data set writer (synthetic, eval_families, merge): made fresh."""

from __future__ import annotations

import shutil
from pathlib import Path


def fresh_folder(root: Path, overwrite: bool, how: str = "pass overwrite=True") -> None:
    """Create ``root`` empty. An existing non-empty ``root`` is deleted when ``overwrite``, else
    refused: FileExistsError naming it and ``how`` to allow replacing it."""
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root}: exists and is not empty; {how}")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
