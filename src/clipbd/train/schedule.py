"""Learning-rate schedule as a pure function of the step (so resuming needs no scheduler state)."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Multiplier in [0, 1]: linear warm-up over `warmup` steps, then cosine decay to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(opt, base_lr: float, mult: float) -> None:
    for group in opt.param_groups:
        group["lr"] = base_lr * mult
