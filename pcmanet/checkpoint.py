"""Our checkpoint format (the safe reading and strict loading it shares with the other
loaders live in ``pcmanet.weights_file``).

A checkpoint is a `torch.save` of a plain dict (so `torch.load(weights_only=True)` reads it
without unpickling arbitrary objects):

    {"format": "pcmanet-live", "version": 1,
     "config": {...RunConfig.model as a nested dict...},   # includes the section-12 switches
     "state_dict": {...}, "extra": {...}}                  # extra: epoch, metrics, ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pcmanet.config import ConfigError, ModelConfig, RunConfig, _from_dict, config_to_dict
from pcmanet.weights_file import (  # re-exported: one error type for every weights file
    CheckpointError,
    as_state_dict,
    load_exact,
    read_weights_file,
)

if TYPE_CHECKING:
    from pcmanet.model import PCMANet

FORMAT, VERSION = "pcmanet-live", 1


def save_checkpoint(path: str | Path, model: nn.Module, cfg: ModelConfig,
                    extra: Mapping[str, Any] | None = None,
                    optimizer: Mapping[str, Any] | None = None,
                    ema: Mapping[str, Any] | None = None) -> None:
    """Write atomically (temp file then rename), so a crash never leaves a truncated file.

    optimizer: an optimizer state_dict to keep for resuming training (optional).
    ema: the weight average's state_dict (``train.ema``) to keep for resuming (optional).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "config": config_to_dict(cfg),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {})}
    if optimizer is not None:
        payload["optimizer"] = optimizer
    if ema is not None:
        payload["ema"] = {k: v.detach().cpu() for k, v in ema.items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, Tensor], dict[str, Any]]:
    """Our format -> (config, state_dict, extra); anything else raises CheckpointError."""
    obj = read_weights_file(path)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a PCMANet Live checkpoint (no 'format: {FORMAT}' entry); for a "
            "reference PCMANet checkpoint use pcmanet.load_official(path, variant=..., task=...)")
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {obj.get('version')}, expected {VERSION}")
    try:
        cfg = _from_dict(RunConfig, {"model": obj["config"]}).model
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"{path}: its stored config is invalid: {e}") from None
    return cfg, as_state_dict(obj["state_dict"], path), dict(obj.get("extra", {}))


def load_checkpoint(
    path: str | Path, expect: ModelConfig | None = None
) -> tuple[PCMANet, ModelConfig, dict[str, Any]]:
    """Build the model the checkpoint describes and load its weights; returns it in eval mode.

    expect: a config the caller intends to run; if the checkpoint's architecture differs
    (another backbone, width, class count...), fail with a message naming both.
    """
    from pcmanet.build import build_pcmanet

    cfg, state, extra = read_checkpoint(path)
    if expect is not None:
        arch = ("backbone", "dim", "groups", "num_heads", "head_dim", "head_hidden",
                "num_classes", "audio")
        diffs = [f"{k}: file {getattr(cfg, k)!r} vs config {getattr(expect, k)!r}"
                 for k in arch if getattr(cfg, k) != getattr(expect, k)]
        if diffs:
            raise CheckpointError(f"{path}: weights are for another variant ({cfg.name}): "
                                  + "; ".join(diffs[:3]))
    # Weights come from the file: never read backbone/VGGish weights named in the stored config.
    cfg_build = _without_weight_files(cfg)
    has_audio = any(k.startswith("audio_encoder.") for k in state)
    model = build_pcmanet(cfg_build, with_audio_encoder=has_audio)
    load_exact(model, state, path)
    return model.eval(), cfg, extra


def _without_weight_files(cfg: ModelConfig) -> ModelConfig:
    from dataclasses import replace

    return replace(cfg, backbone=replace(cfg.backbone, weights=None),
                   audio=replace(cfg.audio, weights=None))


def init_from_checkpoint(model: nn.Module, path: str) -> str:
    """Copy every tensor of our checkpoint at `path` whose name and shape match into `model`.

    Returns a one-line report. A file that shares no tensor with the model is an error (it is
    surely the wrong file). A relative path that does not exist is also tried against the
    repository root, so `pcmanet/assets/demo.pt` works from any directory.
    """
    file = Path(path)
    if not file.is_absolute() and not file.is_file():
        repo = Path(__file__).resolve().parent.parent
        if (repo / file).is_file():
            file = repo / file
    _cfg, state, _extra = read_checkpoint(file)
    own = model.state_dict()
    for part in ("backbone.", "audio_encoder."):
        if not any(k.startswith("gate." + part) for k in state):
            # a fresh kind gate's window backbone (and own audio encoder) start as copies of
            # the file's
            state = {**state, **{"gate." + k: v for k, v in state.items()
                                 if k.startswith(part) and "gate." + k in own}}
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"{file}: train.init shares no tensor (name and shape) with "
                              "this model; give a checkpoint of the same architecture")
    model.load_state_dict(matched, strict=False)
    skipped = sorted(set(own) - set(matched))
    return (f"initialised {len(matched)}/{len(own)} tensors from {file}"
            + (f"; kept fresh: {', '.join(skipped[:6])}{' ...' if len(skipped) > 6 else ''}"
               if skipped else ""))
