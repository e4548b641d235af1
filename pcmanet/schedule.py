"""The training schedule: learning-rate multiplier (warm-up, then a cosine that ends at the
run's end, by steps or by time), when a run must end, and when validation may run again."""

from __future__ import annotations

import math

from pcmanet.config import ConfigError, TrainConfig


def lr_scale(step: int, total_steps: int | None, time_fraction: float, min_ratio: float,
             warmup_steps: int) -> float:
    """Multiplier of train.lr at `step` (0-based): cosine from 1 to min_ratio over progress =
    max(step / total_steps, time_fraction), both clipped to [0, 1], times a linear warm-up
    (step + 1) / warmup_steps during the first warmup_steps steps. total_steps=None (no
    epoch limit) leaves the progress to the time alone."""
    step_fraction = 0.0 if total_steps is None else step / max(1, total_steps)
    progress = min(1.0, max(step_fraction, time_fraction))
    scale = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if step < warmup_steps:
        scale *= (step + 1) / warmup_steps
    return scale


def require_an_end(t: TrainConfig) -> None:
    """A run needs an epoch count, a time budget or both."""
    if t.epochs is None and t.max_minutes is None:
        raise ConfigError("train.epochs: null means 'train until the deadline', but no "
                          "deadline is given; add --max-minutes M or set train.epochs=N")


def next_validation_after(end: float, seconds: float, share: float) -> float:
    """Run time before which the next (non-final) validation waits: one that took `seconds`
    and ended at `end` may use at most `share` of the time up to the next one."""
    return end + seconds * (1.0 - share) / share
