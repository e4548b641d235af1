"""pcmanet/gate_eval.py: the gate recomputed from its parts is the model's own output, and the
truth put in its place is scored against the own object."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pcmanet.build import build_pcmanet
from pcmanet.data import build_dataset
from pcmanet.gate_eval import gate_scores
from pcmanet.twin_eval import twin_pairs, twin_scores


def _items(root: Path) -> tuple[dict, dict[str, str], list[str]]:
    ds = build_dataset("s4", str(root), "test", image_size=64)
    items = {ds.clips[i].name: ds[i] for i in range(len(ds))}
    kinds = sorted({c.category for c in ds.clips})
    return items, twin_pairs(root, "test"), kinds


@pytest.mark.parametrize("hears", ["shared", "own"])
def test_the_gate_from_its_parts_equals_the_model_and_the_counts_add_up(
        tiny_cfg, pitch_family: Path, hears: str) -> None:
    items, twins, kinds = _items(pitch_family)
    torch.manual_seed(0)
    cfg = replace(tiny_cfg, kind_gate=True, kinds=tuple(kinds), gate_audio=hears)
    model = build_pcmanet(cfg).eval()
    for p in model.gate.parameters():              # a gate whose term really moves the logits
        torch.nn.init.normal_(p, std=0.3)
    for head in model.heads:                       # a mask with blobs to propose
        torch.nn.init.normal_(head[-1].weight, std=1.0)
    result = gate_scores(model, items, twins)
    expected = twin_scores(model, items, twins)
    assert result["unknown_kind"] == 0
    assert result["frames"] == expected["frames"] > 0
    assert result["gate"] == pytest.approx(expected["iou_own"], abs=1e-5)
    assert 0 <= result["window_right"] <= result["windows"]
    assert 0 <= result["merged"] <= result["frames"]
    assert 0 <= result["sound_right"] <= result["frames"]
    assert all(0.0 <= result[k] <= 1.0 for k in ("true_windows", "true_windows_and_sound",
                                                 "ceiling"))
    assert model.gate is not None                  # put back after the ungated decode
    model.gate.kinds = kinds[:1] + ["never_heard"] * (len(kinds) - 1)
    assert gate_scores(model, items, twins)["unknown_kind"] == len(twins)   # left out, counted


def test_a_model_without_a_gate_is_refused_with_the_key(tiny_cfg, pitch_family: Path) -> None:
    items, twins, _ = _items(pitch_family)
    with pytest.raises(ValueError, match=r"model\.kind_gate"):
        gate_scores(build_pcmanet(tiny_cfg).eval(), items, twins)
