"""Config fragments that the calib tools write and ``run_live.py --config`` reads.

A fragment is a YAML file with one ``live:`` mapping holding only the keys a tool chose,
headed by comments that say which tool wrote it, when, and from what measurement::

    # calib.threshold 2026-11-21T23:50:00: mIoU 0.806 at keep ratio 0.05 (val, 100 clips)
    live:
      engine:
        cim_threshold: 0.95
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stream.run.config import live_config_from_dict


def fragment_text(live: Mapping[str, Any], tool: str, notes: list[str]) -> str:
    """``{"engine": {...}}`` -> the fragment's text; refused (ConfigError) unless the live
    config loader accepts it, so a tool never writes a file that run_live rejects."""
    data = {"live": _plain(live)}
    live_config_from_dict(data)
    stamp = dt.datetime.now().isoformat(timespec="seconds")
    head = [f"# written by python -m {tool} on {stamp}"] + [f"# {n}" for n in notes]
    return "\n".join(head) + "\n" + yaml.safe_dump(data, sort_keys=False)


def write_fragment(path: str | Path, live: Mapping[str, Any], tool: str,
                   notes: list[str]) -> Path:
    """Write :func:`fragment_text` to ``path`` (parent folders created); -> the path."""
    path = Path(path)
    text = fragment_text(live, tool, notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def output_problem(*paths: Path | None) -> str | None:
    """Why one of a tool's output files (``--out``, ``--json``; None: not asked for) cannot be
    written, in one line; checked before the measurement, so a refusal costs nothing."""
    for path in paths:
        if path is None:
            continue
        if path.is_dir():
            return f"{path}: is a folder; give a file name"
        if not path.parent.is_dir():
            return f"{path}: its folder {path.parent} does not exist"
    return None


def _plain(obj: Any) -> Any:
    """numpy scalars and tuples -> plain YAML types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item"):
        return obj.item()
    return obj
