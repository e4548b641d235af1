"""PCMANet: progressive confident masking attention network for audio-visual segmentation.

Public entry points:
    load_official(path, variant, task)  reference checkpoints, reference-mode model
    build_pcmanet(cfg)                   a model from a ModelConfig
    load_checkpoint / save_checkpoint    our own checkpoint format
    load_config(path, overrides)         YAML -> RunConfig

They load on first use (PEP 562), so importing a light submodule such as :mod:`pcmanet.cli`
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pcmanet.build import build_pcmanet
    from pcmanet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from pcmanet.config import ConfigError, ModelConfig, RunConfig, load_config
    from pcmanet.model import FrameFeatures, PCMANet, PCMANetOutput
    from pcmanet.official import load_official

_HOME = {
    "build_pcmanet": "pcmanet.build",
    "CheckpointError": "pcmanet.checkpoint", "load_checkpoint": "pcmanet.checkpoint",
    "save_checkpoint": "pcmanet.checkpoint",
    "ConfigError": "pcmanet.config", "ModelConfig": "pcmanet.config",
    "RunConfig": "pcmanet.config", "load_config": "pcmanet.config",
    "FrameFeatures": "pcmanet.model", "PCMANet": "pcmanet.model",
    "PCMANetOutput": "pcmanet.model",
    "load_official": "pcmanet.official",
}

__all__ = [
    "CheckpointError", "ConfigError", "FrameFeatures", "ModelConfig", "PCMANet",
    "PCMANetOutput", "RunConfig", "build_pcmanet", "load_checkpoint", "load_config",
    "load_official", "save_checkpoint",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'pcmanet' has no attribute {name!r}")
