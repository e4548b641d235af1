"""An exponential moving average of a model's weights, for validation and ``best.pt``.

On a small data set the weights after each step wander (validation mIoU jumps by several
points from one epoch to the next); their moving average does not. ``train.ema: d`` keeps
``avg = d * avg + (1 - d) * weights`` after every optimizer step, buffers (batch-norm
statistics) included, through torch's own :class:`torch.optim.swa_utils.AveragedModel`; the
run validates and saves the average, and keeps it in ``last.pt`` for ``--resume``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """EMA of ``model``'s parameters and buffers.

    Args:
        model: the model being trained (copied once; the copy holds the average).
        decay: weight of the old average per update, in [0, 1); 0.99 averages over about the
            last 100 steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self._avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                  use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged model (same class and config as the trained one)."""
        return self._avg.module

    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (after an optimizer step)."""
        self._avg.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        return self._avg.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._avg.load_state_dict(state)
