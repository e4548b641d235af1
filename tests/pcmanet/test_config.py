"""Config loading: YAML -> frozen dataclasses; bad keys, types and values name the key."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from pcmanet.config import ConfigError, RunConfig, config_from_dict, dump_config, load_config
from pcmanet.variants import PCMANET_VARIANTS
from tests.conftest import REPO


@pytest.mark.parametrize("name", sorted(PCMANET_VARIANTS))
def test_each_variant_yaml_is_complete_and_mirrors_the_registry(name):
    path = REPO / "configs" / f"{name}.yaml"
    cfg = load_config(path)
    assert cfg.model == PCMANET_VARIANTS[name]
    # complete: every field of the model section is written out in the file
    import yaml

    written = yaml.safe_load(path.read_text())
    for section in ("model", "data", "train"):
        assert set(written[section]) == set(getattr(RunConfig(), section).__dataclass_fields__)


def test_round_trip_and_frozen():
    cfg = load_config(REPO / "configs" / "resnet50_s4.yaml", ["model.dim=128", "model.groups=8"])
    assert cfg.model.dim == 128 and cfg.model.backbone.out_indices == (1, 2, 3, 4)
    import yaml

    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg
    with pytest.raises(FrozenInstanceError):
        cfg.model.dim = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  dimm: 3\n", r"model\.dimm: unknown key \(valid keys here: name, backbone"),
        ("model:\n  backbone: {nmae: x}\n", r"model\.backbone\.nmae: unknown key"),
        ("model:\n  dim: '256'\n", r"model\.dim: expected int, got str '256'"),
        ("model:\n  dim: 2.5\n", r"model\.dim: expected int, got float"),
        ("model:\n  query_grad: 1\n", r"model\.query_grad: expected bool, got int"),
        ("model:\n  backbone: {out_indices: 3}\n", r"backbone\.out_indices: expected a list"),
        ("model:\n  backbone: {out_indices: [1, 2, x, 4]}\n", r"out_indices\[2\]: expected int"),
        ("model:\n  groups: 3\n", r"model\.groups: must divide model\.dim=256"),
        ("model:\n  threshold: 0.3\n", r"model\.threshold: must lie in"),
        ("model:\n  audio: {encoder: wav2vec}\n", r"audio\.encoder: must be vggish or light"),
        ("- a\n- b\n", r"expected a mapping at the top level"),
        ("model: [1\n", r"not valid YAML"),
        ("trian: {}\n", r"trian: unknown key"),
        ("train:\n  encoder_grad: some\n", r"train\.encoder_grad: must be all or labelled"),
        ("train:\n  warmup_steps: -1\n", r"train\.warmup_steps: must be >= 0"),
        ("model:\n  refine_dim: -4\n", r"model\.refine_dim: must be >= 0"),
        ("train:\n  val_share: 0\n", r"train\.val_share: must lie in \(0, 1\]"),
        ("train:\n  epochs: -2\n", r"train\.epochs: must be >= 1 \(or null"),
        ("data:\n  paste: 1.5\n", r"data\.paste: must be in \[0, 1\]"),
        ("data:\n  paste_same: 2\n", r"data\.paste_same: must be in \[0, 1\]"),
        ("data:\n  hue: 0.5\n  augment: false\n", r"data\.hue: is part of the training aug"),
        ("train:\n  kind_loss: -1\n", r"train\.kind_loss: must be >= 0"),
    ],
)
def test_bad_configs_name_the_key_and_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert "bad.yaml" in str(e.value)


def test_threshold_accepts_int_one_and_null_weights():
    cfg = load_config(None, ["model.threshold=1", "model.backbone.weights=null"])
    assert cfg.model.threshold == 1.0 and isinstance(cfg.model.threshold, float)


def test_bad_overrides_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["model.dim"])
    with pytest.raises(ConfigError, match=r"model\.nope: unknown key"):
        load_config(None, ["model.nope=1"])
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_demo_config_trains_until_the_deadline():
    """configs/demo.yaml lists every train and data key; no epoch limit, so --max-minutes sets
    the end (pcmanet.train refuses it without one), and validation keeps to a small time share."""
    import yaml

    path = REPO / "configs" / "demo.yaml"
    written = yaml.safe_load(path.read_text())
    assert set(written["train"]) == set(RunConfig().train.__dataclass_fields__)
    assert set(written["data"]) == set(RunConfig().data.__dataclass_fields__)
    cfg = load_config(path, ["train.max_minutes=15"])
    assert cfg.train.epochs is None and cfg.train.max_minutes == 15.0
    assert cfg.train.val_share < 0.1
    assert load_config(path, ["train.epochs=12"]).train.epochs == 12
