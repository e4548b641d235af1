"""The fine-tuning recipe's pieces (issue 22): the light audio encoder's summary branch, lr per
part, twin-keeping batches, a tiny real run with all three, and the twin scorer."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pcmanet.audio import LightAudioEncoder, build_audio_encoder
from pcmanet.build import build_pcmanet
from pcmanet.config import ConfigError, load_config
from pcmanet.sampling import BlockShuffleSampler
from pcmanet.train import main as train_main
from pcmanet.train import param_groups
from pcmanet.twin_eval import main as twin_main
from pcmanet.twin_eval import twin_scores
from tests.conftest import REPO

TINY = str(REPO / "configs" / "test_tiny.yaml")


def test_the_summary_branch_starts_silent_and_sees_pitch_and_rate() -> None:
    torch.manual_seed(0)
    plain, summed = LightAudioEncoder(32), LightAudioEncoder(32, summary=True)
    summed.load_state_dict(plain.state_dict(), strict=False)  # the demo weights' situation
    plain.eval(), summed.eval()
    x = torch.randn(3, 1, 96, 64)
    assert torch.equal(plain(x), summed(x))  # zero-initialised: the same function at first
    low, high = torch.zeros(1, 1, 96, 64), torch.zeros(1, 1, 96, 64)
    low[..., 10], high[..., 40] = 5.0, 5.0  # a steady tone in band 10 vs band 40
    s_low, s_high = summed.summarise(low), summed.summarise(high)
    assert s_low[0, 10] > 3 and s_high[0, 40] > 3 and s_low[0, 40] < 0
    t = torch.arange(96, dtype=torch.float32)
    pulses = (1 + torch.cos(2 * torch.pi * 8 * t / 96)).view(1, 1, 96, 1).expand(1, 1, 96, 64)
    assert int(summed.summarise(pulses)[0, 64:].argmax()) + 1 == 8  # 8 beats: bin 8
    with pytest.raises(ValueError, match="light"):
        build_audio_encoder("vggish", summary=True)


def test_lr_per_part_puts_the_audio_parts_in_their_own_group(tiny_cfg: Any) -> None:
    model = build_pcmanet(tiny_cfg)
    assert len(param_groups(model, 1.0)) == 1
    rest, audio = param_groups(model, 4.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert audio["lr_scale"] == 4.0 and rest["lr_scale"] == 1.0
    assert all(names[id(p)].startswith(("audio_encoder.", "audio_proj.")) for p in audio["params"])
    assert not any(names[id(p)].startswith("audio") for p in rest["params"])
    assert len(audio["params"]) + len(rest["params"]) == sum(p.requires_grad
                                                            for p in model.parameters())
    with pytest.raises(ConfigError, match="audio_lr_scale"):
        load_config(TINY, ["train.audio_lr_scale=0"])
    with pytest.raises(ConfigError, match="shuffle_block"):
        load_config(TINY, ["train.shuffle_block=0"])


def test_block_shuffle_keeps_twins_together_and_covers_every_clip() -> None:
    order = list(BlockShuffleSampler(11, 2, torch.Generator().manual_seed(0)))
    assert sorted(order) == list(range(11))
    assert all(order.index(a + 1) == order.index(a) + 1 for a in range(0, 10, 2))
    again = list(BlockShuffleSampler(11, 2, torch.Generator().manual_seed(0)))
    assert again == order and order != list(range(11))


def test_a_tiny_run_with_the_recipe_trains_and_the_twin_scorer_reads_it(
        tmp_path: Path, pitch_family: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert train_main(["--config", TINY, "--data-root", str(pitch_family), "--task", "s4",
                       "--out", str(out), "train.epochs=2", "data.image_size=64",
                       "data.num_workers=0", "train.batch_size=4", "model.audio.summary=true",
                       "train.audio_lr_scale=5", "train.shuffle_block=2"]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()
               if x.startswith('{"epoch"')]
    assert [r["step"] for r in records] == [2, 4]
    assert twin_main(["--checkpoint", str(out / "best.pt"), "--data-root", str(pitch_family),
                      "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["clips"] == 4 and result["frames"] == 20
    assert sum(sum(c.values()) for c in result["chosen"].values()) == 20


class _Oracle(nn.Module):
    """Predicts a fixed mask per audio tensor (by identity): (T, 1, H, W) logits."""

    def __init__(self, by_audio: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.by_audio = by_audio

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> Any:
        masks = self.by_audio[id(audio)]
        return type("Out", (), {"logits": [masks * 20 - 10]})()


def test_twin_scores_own_1_twin_0_and_count_the_choice(pitch_family: Path) -> None:
    from pcmanet.data import build_dataset
    from pcmanet.twin_eval import twin_pairs

    ds = build_dataset("s4", str(pitch_family), "test", image_size=64)
    items = {ds.clips[i].name: ds[i] for i in range(len(ds))}
    twins = twin_pairs(pitch_family, "test")
    right = _Oracle({id(it["audio"]): it["masks"] for it in items.values()})
    r = twin_scores(right, items, twins)
    assert r["iou_own"] == pytest.approx(1.0) and r["iou_twin"] == 0.0
    assert r["area_ratio"] == pytest.approx(1.0)
    wrong = _Oracle({id(items[a]["audio"]): items[b]["masks"] for a, b in twins.items()})
    w = twin_scores(wrong, items, twins)
    assert w["iou_own"] == 0.0 and w["iou_twin"] == pytest.approx(1.0)
    assert all(c["own"] == 0 and c["twin"] > 0 for c in w["chosen"].values())


def test_demo_weights_load_into_a_model_with_the_summary_branch() -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml")
    model = build_pcmanet(replace(cfg.model, audio=replace(cfg.model.audio, summary=True)))
    from pcmanet.checkpoint import init_from_checkpoint

    report = init_from_checkpoint(model, "pcmanet/assets/demo.pt")
    assert "kept fresh: audio_encoder.summary.bias, audio_encoder.summary.weight" in report
