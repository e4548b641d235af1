"""Reference-checkpoint import and our own checkpoint format, good files and bad ones."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from pcmanet import CheckpointError, load_checkpoint, load_official, save_checkpoint
from pcmanet.build import build_pcmanet
from pcmanet.official import DROPPED, convert_official_state_dict, map_official_key
from pcmanet.variants import reference_config
from tests.conftest import random_state_dict, read_key_table

TABLES = {
    "resnet50": "official_checkpoint_keys.tsv",
    "pvt_v2_b5": "official_checkpoint_keys_pvt.tsv",
}


def _official_file(tmp_path, variant, task="s4", seed=0):
    state = random_state_dict(read_key_table(TABLES[variant]), seed)
    if task == "ms3" and variant == "resnet50":       # g = 8: AVGA widths 32
        for k in list(state):
            if k.endswith("seq1.0.weight") and k.startswith("avga"):
                state[k] = torch.randn(256, 32, 1, 1) * 0.05
            if k.startswith("avga") and ".fc.1." in k:
                state[k] = torch.randn(32, *state[k].shape[1:]) * 0.05
    path = tmp_path / f"{variant}_{task}.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("variant", ["resnet50", "pvt_v2_b5"])
def test_every_reference_key_is_consumed_or_dropped_by_name(variant):
    table = read_key_table(TABLES[variant])
    state = {k: torch.zeros(0) for k in table}
    ours, dropped = convert_official_state_dict(state, variant)
    assert len(ours) + len(dropped) == len(table)
    assert all(any(re.match(p, k) for p in DROPPED) for k in dropped)
    model = build_pcmanet(reference_config(variant, "s4"), with_audio_encoder=False)
    assert set(ours) == set(model.state_dict())       # a bijection onto our keys
    if variant == "resnet50":
        assert len(dropped) == 174 + 7                # layer3_2/layer4_2 + gf4.seq2


def test_load_official_resnet_values_land_where_they_belong(tmp_path):
    path, state = _official_file(tmp_path, "resnet50")
    model = load_official(path, variant="resnet50", task="s4")
    assert not model.training
    ours = model.state_dict()
    for key in ("resnet.layer3_1.2.conv2.weight", "qsca3.attn.to_patch_embedding.1.weight",
                "qsca1.attn.transformer.layers.0.0.fn.to_out.0.bias", "aud_fc1.weight",
                "output_conv2.3.weight", "conv4.1.running_var"):
        assert torch.equal(ours[map_official_key(key, "resnet50")], state[key]), key
    out = model(torch.randn(5, 3, 64, 64), torch.rand(5, 128))
    assert [x.shape for x in out.logits] == [(5, 1, 64, 64)] * 4


def test_load_official_pvt(tmp_path):
    path, state = _official_file(tmp_path, "pvt_v2_b5")
    model = load_official(path, variant="pvt_v2_b5", task="s4")
    key = "encoder_backbone.block3.17.mlp.dwconv.dwconv.weight"
    ours = model.state_dict()["backbone.stages_2.blocks.17.mlp.dwconv.weight"]
    assert torch.equal(ours, state[key])


def test_pvt_key_map_agrees_with_timm_filter():
    """Our explicit map and timm's own converter agree on every backbone key."""
    from timm.models.pvt_v2 import checkpoint_filter_fn

    table = read_key_table(TABLES["pvt_v2_b5"])
    backbone = {k[len("encoder_backbone."):]: torch.zeros(0) for k in table
                if k.startswith("encoder_backbone.")}
    timm_names = checkpoint_filter_fn(backbone, None)
    for old, new in zip(backbone, timm_names, strict=True):
        # timm names stages `stages.N`; features_only flattens it to `stages_N`.
        ours = map_official_key("encoder_backbone." + old, "pvt_v2_b5")
        assert ours == "backbone." + new.replace("stages.", "stages_", 1), old


def test_load_official_errors_name_the_problem(tmp_path):
    path, state = _official_file(tmp_path, "resnet50")
    with pytest.raises(CheckpointError, match="variant='resnet50'"):
        load_official(path, variant="pvt_v2_b5", task="s4")
    with pytest.raises(CheckpointError, match=r"task='s4'") as e:
        load_official(path, variant="resnet50", task="ms3")
    assert "avga" in str(e.value) and str(path) in str(e.value)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match=r"truncated.pth.*not a readable"):
        load_official(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes.pth"):
        load_official(text)
    missing = dict(state)
    del missing["qsca2.aud_fc.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: qsca\.1\.aud_fc\.weight"):
        load_official(tmp_path / "missing.pth")
    extra = dict(state, **{"decoder.extra.weight": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"decoder.extra.weight"):
        load_official(tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="no such file"):
        load_official(tmp_path / "absent.pth")


class Payload:
    """Any non-tensor object: unpickling it would run arbitrary code paths."""


def test_pickled_objects_are_refused(tmp_path):
    """weights_only=True: a file holding arbitrary Python objects is not unpickled."""
    bad = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, bad)
    with pytest.raises(CheckpointError, match=r"evil.pth.*not a readable"):
        load_official(bad)


def test_own_checkpoint_round_trip(tmp_path, tiny_cfg):
    model = build_pcmanet(tiny_cfg).eval()
    path = tmp_path / "run" / "best.pt"
    save_checkpoint(path, model, tiny_cfg, extra={"epoch": 3, "miou": 0.5})
    loaded, cfg, extra = load_checkpoint(path)
    assert cfg == tiny_cfg and extra == {"epoch": 3, "miou": 0.5}
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    x, a = torch.randn(5, 3, 64, 64), torch.randn(5, 1, 96, 64)
    with torch.no_grad():
        assert torch.equal(model(x, a).logits[0], loaded(x, a).logits[0])


def test_own_checkpoint_errors(tmp_path, tiny_cfg):
    model = build_pcmanet(tiny_cfg)
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, tiny_cfg)
    other = replace(tiny_cfg, dim=48)
    with pytest.raises(CheckpointError, match=r"another variant.*dim: file 32 vs config 48"):
        load_checkpoint(path, expect=other)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=r"cut.pt"):
        load_checkpoint(cut)
    official, _ = _official_file(tmp_path, "resnet50")
    with pytest.raises(CheckpointError, match="load_official"):
        load_checkpoint(official)
    # A stored state_dict that does not fit its own config.
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["heads.0.3.weight"] = torch.zeros(2, 16, 1, 1)
    torch.save(payload, tmp_path / "bad_shape.pt")
    with pytest.raises(CheckpointError, match=r"bad_shape.pt.*heads\.0\.3\.weight"):
        load_checkpoint(tmp_path / "bad_shape.pt")
