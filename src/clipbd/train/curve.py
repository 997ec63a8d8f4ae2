"""A training loop's loss per step, kept bounded in the artifact's sidecar (`loss_curves`).

A curve is at most POINTS points: with more steps than that, the steps are cut into equal
chunks of ceil(n / POINTS) consecutive steps (the last one may be shorter) and each point is
the chunk's mean loss at the chunk's last step, so a 100K-step run stays a few kB of JSON and
a spike still moves its chunk's mean. Steps count from 1; a loop resumed from a state saved
before curves were kept records only the steps it ran (`first_step` says where they start).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

POINTS = 200


def downsample(losses: Sequence[float], points: int = POINTS, first_step: int = 1) -> dict:
    """{"step": [...], "loss": [...], "n_steps": n, "chunk": k, "first_step": s}."""
    n = len(losses)
    chunk = max(1, math.ceil(n / points))
    steps, means = [], []
    for start in range(0, n, chunk):
        part = [float(x) for x in losses[start:start + chunk]]
        steps.append(first_step + start + len(part) - 1)
        means.append(math.fsum(part) / len(part))
    return {"step": steps, "loss": means, "n_steps": n, "chunk": chunk, "first_step": first_step}


def curves(**named: Sequence[float] | None) -> dict:
    """Sidecar field: {"loss_curves": {name: downsampled curve}} for every non-empty loop."""
    kept = {k: downsample(v) for k, v in named.items() if v}
    return {"loss_curves": kept} if kept else {}


def of(obj) -> dict:
    """The curves a defense or learned trigger left on itself after fitting (`losses`, and
    CBPT's trigger inversion `inversion_losses`); {} for methods that train nothing."""
    return curves(train=getattr(obj, "losses", None),
                  inversion=getattr(obj, "inversion_losses", None))
