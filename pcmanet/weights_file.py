"""Reading weights files safely, and strict state_dict loading: shared by our checkpoints
(``pcmanet.checkpoint``), reference checkpoints (``pcmanet.official``) and VGGish
(``pcmanet.audio.vggish``). Depends on torch only, so every loader can use it without
importing the model builders.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file and what is wrong."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The weights file does not exist."""


def read_weights_file(path: str | Path) -> Any:
    """torch.load(weights_only=True); a missing, truncated or corrupt file -> CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises many types on garbage (IndexError, ...)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        refused = [ln for ln in lines if "GLOBAL" in ln]      # weights_only refused an object
        if refused:
            raise CheckpointError(
                f"{path}: not a readable PyTorch weights file: it holds Python objects other "
                f"than tensors, which are never unpickled (weights_only=True): {refused[0]}"
            ) from None
        first = lines[0] if lines else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch weights file (truncated, corrupt, or it holds "
            f"objects other than tensors): {first}") from None


def as_state_dict(obj: Any, path: str | Path) -> dict[str, Tensor]:
    """Accept a flat state_dict, or one wrapped under 'state_dict' / 'model'."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict (expected a mapping of names to "
                              f"tensors, got {type(obj).__name__})")
    return dict(obj)


def _first(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_exact(module: nn.Module, state: Mapping[str, Tensor], path: str | Path, hint: str = "",
               assign: bool = False) -> None:
    """Strict load: every key present, none extra, every shape equal; else CheckpointError.

    assign: adopt the tensors instead of copying (for a module built on the meta device).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs model {list(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if shapes:
        problems.append(f"wrong shapes: {_first(shapes, 3)}")
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if problems:
        raise CheckpointError(f"{path}: does not fit this model; " + "; ".join(problems)
                              + (f". {hint}" if hint else ""))
    module.load_state_dict(state, strict=True, assign=assign)
