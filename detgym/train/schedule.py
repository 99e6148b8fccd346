"""Learning-rate schedules as a multiplicative factor of the base learning rate."""

from __future__ import annotations

import bisect
import math

from .config import TrainConfig


def lr_factor(iteration: int, config: TrainConfig) -> float:
    """Factor applied to the base learning rate at ``iteration`` (0-based) under ``config``'s schedule.

    Linear warmup from ``warmup_factor`` to 1 over ``warmup_iters`` iterations, then cosine decay to
    ``min_lr_ratio``, multi-step decay by ``gamma`` at the ``milestones`` fractions, or constant.
    """
    if iteration < config.warmup_iters:
        alpha = iteration / config.warmup_iters
        return config.warmup_factor * (1 - alpha) + alpha
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "multistep":
        steps = [round(m * config.iterations) for m in config.milestones]
        return config.gamma ** bisect.bisect_right(steps, iteration)
    span = max(config.iterations - config.warmup_iters, 1)
    progress = min((iteration - config.warmup_iters) / span, 1.0)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
