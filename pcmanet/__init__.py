"""PCMANet: progressive confident masking attention network for audio-visual segmentation.

Public entry points:
    load_official(path, variant, task)  reference checkpoints, reference-mode model
    build_pcmanet(cfg)                   a model from a ModelConfig
    load_checkpoint / save_checkpoint    our own checkpoint format
    load_config(path, overrides)         YAML -> RunConfig
"""

from pcmanet.build import build_pcmanet
from pcmanet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pcmanet.config import ConfigError, ModelConfig, RunConfig, load_config
from pcmanet.model import FrameFeatures, PCMANet, PCMANetOutput
from pcmanet.official import load_official

__all__ = [
    "CheckpointError", "ConfigError", "FrameFeatures", "ModelConfig", "PCMANet",
    "PCMANetOutput", "RunConfig", "build_pcmanet", "load_checkpoint", "load_config",
    "load_official", "save_checkpoint",
]
__version__ = "0.1.0"
