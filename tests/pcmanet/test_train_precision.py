"""Training's GPU recipe (bf16 autocast, channels-last weights, pinned loader, few host reads of
the loss) run on the CPU with ``train.cpu_amp``, and on a GPU where there is one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pcmanet.config import load_config
from pcmanet.evaluate import forward_batch
from pcmanet.train import Trainer
from tests.conftest import REPO, synthetic_s4

TINY = REPO / "configs" / "test_tiny.yaml"
FAST = ["data.image_size=64", "data.num_workers=0", "train.lr=2e-3", "train.batch_size=4",
        "train.epochs=1"]


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_s4(tmp_path_factory, "syn_amp", train=8, val=2, test=2, size=64, seed=3)


def trainer(root: Path, out: Path, device: str, *overrides: str) -> Trainer:
    cfg = load_config(TINY, [*FAST, *overrides])
    return Trainer(cfg, "s4", str(root), out, torch.device(device), rank=0, world=1)


def convs(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_the_cpu_trains_in_fp32_unless_asked(s4_root: Path, tmp_path: Path) -> None:
    t = trainer(s4_root, tmp_path, "cpu")
    assert not t.amp and not t.loader.pin_memory
    assert all(w.is_contiguous() for w in convs(t.model))


def test_cpu_amp_trains_in_bf16_with_channels_last_weights(s4_root: Path, tmp_path: Path
                                                           ) -> None:
    t = trainer(s4_root, tmp_path, "cpu", "train.cpu_amp=true")
    assert t.amp
    assert all(w.is_contiguous(memory_format=torch.channels_last)
               for w in convs(t.model) if w.dim() == 4 and w.shape[-1] > 1)
    before = [p.detach().clone() for p in t.model.parameters()]
    assert t.train_epoch()
    assert t.step == 2 and math.isfinite(t._epoch_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters(), strict=True))
    assert all(p.dtype == torch.float32 for p in t.model.parameters())   # fp32 master weights
    batch = next(iter(t.loader))
    with torch.no_grad(), t._autocast():
        out = forward_batch(t.model, batch)
    assert out.logits[0].dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_trains_with_amp_channels_last_and_a_pinned_loader(s4_root: Path,
                                                                tmp_path: Path) -> None:
    t = trainer(s4_root, tmp_path, "cuda", "data.num_workers=2", "data.cache=true")
    assert t.amp and t.loader.pin_memory and t.loader.num_workers == 2
    assert all(w.is_contiguous(memory_format=torch.channels_last)
               for w in convs(t.model) if w.dim() == 4 and w.shape[-1] > 1)
    assert t.train_epoch() and t.step == 2 and math.isfinite(t._epoch_loss)
