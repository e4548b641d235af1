"""Typed configuration: YAML -> frozen dataclasses -> plain constructor arguments.

`load_config(path, overrides)` reads a YAML file, lays it over the dataclass defaults and
applies `a.b=c` overrides. Unknown keys, wrong types and impossible values are rejected with
the dotted key's name, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key."""


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "resnet50"                    # any timm model with features_only support
    weights: str | None = None                # local timm/torchvision weights file, or None
    out_indices: tuple[int, ...] = (1, 2, 3, 4)  # four feature levels, strides 4/8/16/32


@dataclass(frozen=True)
class AudioConfig:
    encoder: str = "vggish"                   # "vggish" (reference) or "light"
    weights: str | None = None                # local VGGish state_dict file, or None
    embed_dim: int = 128                      # width of the audio embedding fed to the model
    frozen: bool = True                       # VGGish is frozen in the reference recipe
    summary: bool = False                     # light: + band-profile / rhythm branch (zero init)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet50_s4"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    dim: int = 256                            # decoder width C
    groups: int = 8                           # AVGA group count g; must divide dim
    num_heads: int = 8                        # QSCA heads
    head_dim: int = 32                        # QSCA width per head
    head_hidden: int = 128                    # hidden width of the output heads
    num_classes: int = 1                      # 1 (S4/MS3, sigmoid) or 71 (AVSS, softmax)
    num_frames: int = 5                       # T frames per clip
    threshold: float = 0.99                   # CIM: uncertain where 1-thr <= p <= thr
    # Switches of docs/pcmanet.md; the defaults are the official behaviour.
    scrambled_tokens: bool = True             # official no-transpose token-to-map reshape
    query_grad: bool = False                  # official: no gradient through selected queries
    gather_max_ratio: float = 0.4             # above this keep ratio QSCA runs dense
    # Not in the reference: width of a stride-2 refinement of the final mask from the
    # backbone's stride-2 level (pcmanet/decoder.py MaskRefiner); 0 = off, as the reference.
    refine_dim: int = 0
    # Not in the reference: the kind gate (pcmanet/kind_gate.py, S4). Training fills `kinds`
    # with the train split's categories; a checkpoint keeps them.
    kind_gate: bool = False
    kinds: tuple[str, ...] = ()
    # What the gate's audio head hears: "shared", the model's projected audio a0 (window mean);
    # "own", its own copy of the audio encoder on each decoded row's own log-mel.
    gate_audio: str = "shared"
    # The gate's proposals: a grid cell per gate_stride pixels; the regions of a frame compete
    # by (match / best match) ** gate_compete (0: each on its own). pcmanet/kind_gate.py.
    gate_stride: int = 2
    gate_compete: float = 2.0
    # Each region is cut in two by colour when its parts' mean colours lie more than this
    # apart (normalised frame units); 0: never.
    gate_split: float = 1.5
    # Each window is named turned gate_views ways (0, 90, 180, 270 degrees), kinds averaged.
    gate_views: int = 4
    # Each window shows only the pixels within gate_blank pixels of its region, the rest
    # zeroed (null: the whole window).
    gate_blank: int | None = 2


@dataclass(frozen=True)
class DataConfig:
    image_size: int | None = 224              # square model input; None keeps the file size
    audio_source: str = "wav"                 # "wav" (our log-mel) or "pkl" (trusted data only)
    augment: bool = False                     # flip / scale / colour, training split only
    num_workers: int = 2                      # DataLoader worker processes
    cache: bool = False                       # S4/MS3: keep decoded clips in memory (uint8)
    # S4 training: chance that a clip gets 1..paste_objects objects cut out of other training
    # clips (pcmanet/data/paste.py); MS3 / AVSS: no effect (no category per clip)
    paste: float = 0.0
    paste_objects: int = 2
    paste_same: float = 0.0  # chance a pasted object comes from the clip's own category
    # training: chance that a clip's frames get a random hue rotation (and each pasted object
    # one of its own): for sets whose colours name nothing (colour then cannot key a memory)
    hue: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    # paper: 15 (S4), 30 (MS3), 60 (AVSS); null = no epoch limit, train until the
    # train.max_minutes deadline (which must then be given)
    epochs: int | None = 15
    batch_size: int = 4                       # clips per step (per process under torchrun)
    lr: float = 1e-4                          # Adam, as the reference
    min_lr_ratio: float = 1.0                 # cosine decay to lr*ratio; 1.0 = constant lr
    weight_decay: float = 0.0
    stage_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # finest stage first
    grad_clip: float | None = None            # max gradient norm, or None
    seed: int = 123
    val_every: int = 1                        # epochs between validations
    val_share: float = 1.0                    # validation's share of the run's time at most
    val_batch_size: int = 1
    amp: bool = True                          # bf16 autocast on CUDA
    channels_last: bool = True                # CUDA: model weights channels-last (with amp)
    cpu_amp: bool = False                     # amp and channels_last on the CPU too (slow:
                                              # runs the CUDA recipe's code in CPU tests)
    max_minutes: float | None = None          # the run's wall-time budget (across --resume)
    warmup_steps: int = 0                     # linear lr warm-up over the first steps
    encoder_grad: str = "all"                 # all | labelled: S4 economy (pcmanet/train_step.py)
    decode_frames: int | None = None          # decode k random labelled frames per clip (MS3)
    init: str | None = None                   # start from this checkpoint's matching weights
    ema: float | None = None                  # validate/keep an EMA of the weights (decay)
    audio_lr_scale: float = 1.0               # lr factor of audio_encoder.* and audio_proj.*
    shuffle_block: int = 1                    # shuffle blocks of k consecutive clips (twins)
    kind_loss: float = 0.0                    # S4: weight of the object-kind loss (kind_loss.py)
    gate_loss: float = 1.0                    # weight of the kind gate's own kind losses
    gate_warmup: int = 0                      # window-only steps of the gate before the run


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def validate_run_config(cfg: RunConfig) -> None:
    """Reject impossible values anywhere in the run config, naming the key."""
    validate_model_config(cfg.model)
    d, t = cfg.data, cfg.train
    checks = [
        (d.image_size is None or d.image_size >= 32, "data.image_size", "must be >= 32 or null"),
        (d.audio_source in ("wav", "pkl"), "data.audio_source", "must be wav or pkl"),
        (d.num_workers >= 0, "data.num_workers", "must be >= 0"),
        (0.0 <= d.paste <= 1.0, "data.paste", "must be in [0, 1]"),
        (d.paste_objects >= 1, "data.paste_objects", "must be >= 1"),
        (0 <= d.paste_same <= 1, "data.paste_same", "must be in [0, 1]"),
        (0.0 <= d.hue <= 1.0, "data.hue", "must be in [0, 1]"),
        (d.hue == 0 or d.augment, "data.hue",
         "is part of the training augmentation: set data.augment=true too"),
        (t.epochs is None or t.epochs >= 1, "train.epochs",
         "must be >= 1 (or null: until the train.max_minutes deadline)"),
        (t.batch_size >= 1 and t.val_batch_size >= 1, "train.batch_size", "must be >= 1"),
        (t.lr > 0, "train.lr", "must be > 0"),
        (0.0 <= t.min_lr_ratio <= 1.0, "train.min_lr_ratio", "must lie in [0, 1]"),
        (t.weight_decay >= 0, "train.weight_decay", "must be >= 0"),
        (len(t.stage_weights) == 4, "train.stage_weights", "needs one weight per stage (4)"),
        (t.val_every >= 1, "train.val_every", "must be >= 1"),
        (0.0 < t.val_share <= 1.0, "train.val_share", "must lie in (0, 1]"),
        (t.max_minutes is None or t.max_minutes > 0, "train.max_minutes", "must be > 0"),
        (t.grad_clip is None or t.grad_clip > 0, "train.grad_clip", "must be > 0"),
        (t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0"),
        (t.audio_lr_scale > 0, "train.audio_lr_scale", "must be > 0"),
        (t.shuffle_block >= 1, "train.shuffle_block", "must be >= 1"),
        (t.kind_loss >= 0, "train.kind_loss", "must be >= 0"),
        (t.gate_loss >= 0, "train.gate_loss", "must be >= 0"),
        (t.gate_warmup >= 0, "train.gate_warmup", "must be >= 0 (0: none)"),
        (t.encoder_grad in ("all", "labelled"), "train.encoder_grad", "must be all or labelled"),
        (t.ema is None or 0.0 <= t.ema < 1.0, "train.ema", "must lie in [0, 1) or be null"),
        (t.decode_frames is None or t.decode_frames >= 1, "train.decode_frames",
         "must be >= 1 (or null: every labelled frame)"),
    ]
    for ok, key, why in checks:
        if not ok:
            raise ConfigError(f"{key}: {why}")


def validate_model_config(cfg: ModelConfig) -> None:
    """Reject impossible values with the key's name."""
    checks = [
        (cfg.dim > 0, "model.dim", "must be > 0"),
        (cfg.groups > 0 and cfg.dim % cfg.groups == 0, "model.groups",
         f"must divide model.dim={cfg.dim}"),
        (cfg.num_heads > 0 and cfg.head_dim > 0, "model.num_heads",
         "heads and head_dim must be > 0"),
        (cfg.num_classes >= 1, "model.num_classes", "must be >= 1"),
        (cfg.num_frames >= 1, "model.num_frames", "must be >= 1"),
        (0.5 < cfg.threshold <= 1.0, "model.threshold", "must lie in (0.5, 1]"),
        (0.0 <= cfg.gather_max_ratio <= 1.0, "model.gather_max_ratio", "must lie in [0, 1]"),
        (len(cfg.backbone.out_indices) == 4, "model.backbone.out_indices", "needs four levels"),
        (cfg.audio.embed_dim > 0, "model.audio.embed_dim", "must be > 0"),
        (cfg.refine_dim >= 0, "model.refine_dim", "must be >= 0 (0 = no refinement)"),
        (cfg.audio.encoder in ("vggish", "light"), "model.audio.encoder",
         "must be vggish or light"),
        (not cfg.kind_gate or cfg.num_classes == 1, "model.kind_gate",
         "is for binary masks (S4): set model.kind_gate=false with num_classes > 1"),
        (cfg.gate_audio in ("shared", "own"), "model.gate_audio", "must be shared or own"),
        (cfg.kind_gate or cfg.gate_audio == "shared", "model.gate_audio",
         "is the kind gate's: set model.kind_gate=true or model.gate_audio=shared"),
        (cfg.gate_stride >= 1, "model.gate_stride", "must be >= 1 (pixels per grid cell)"),
        (cfg.gate_compete >= 0, "model.gate_compete", "must be >= 0 (0: no competition)"),
        (cfg.gate_split >= 0, "model.gate_split", "must be >= 0 (0: regions are never cut)"),
        (1 <= cfg.gate_views <= 4, "model.gate_views", "must be 1..4 (turns of each window)"),
        (cfg.gate_blank is None or cfg.gate_blank >= 0, "model.gate_blank",
         "must be >= 0 (pixels kept around each window's region) or null (whole windows)"),
        (cfg.kind_gate or not cfg.kinds, "model.kinds",
         "names the kind gate's categories: set model.kind_gate=true or model.kinds=[]"),
        (len(set(cfg.kinds)) == len(cfg.kinds) and len(cfg.kinds) != 1, "model.kinds",
         "must be empty (training fills it) or >= 2 distinct category names"),
    ]
    for ok, key, why in checks:
        if not ok:
            raise ConfigError(f"{key}: {why}")


# ------------------------------------------------------------------------------------------
# dict <-> dataclass


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (lists -> tuples)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(
            f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return _from_dict(tp, value, key)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        item_tp = args[0]
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, str):          # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise ConfigError(
                f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def _from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"{key}: unknown key (valid keys here: {', '.join(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Build a RunConfig from a nested mapping; missing keys take the dataclass defaults."""
    cfg = _from_dict(RunConfig, data)
    validate_run_config(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists), the inverse of `config_from_dict`."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    return plain(cfg)  # type: ignore[no-any-return]


def dump_config(cfg: Any) -> str:
    """YAML text of a resolved config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


# ------------------------------------------------------------------------------------------
# files and overrides


def _merge(base: dict[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in delta.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """'model.dim=128' -> {'model': {'dim': 128}}; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. model.dim=128")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        reason = " ".join(str(e).split())
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({reason})") from None
    node: dict[str, Any] = {}
    out = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """YAML file (optional) over the defaults, then `a.b=c` overrides, validated."""
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        data = load_yaml(path)
        where = str(path)
    for text in overrides:
        data = _merge(data, parse_override(text))
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


# Public names for other packages' configs (stream.run.config): same rules, same messages.
from_mapping = _from_dict
merge = _merge
