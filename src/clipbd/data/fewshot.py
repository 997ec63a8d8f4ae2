"""Seeded, stratified few-shot sampler: exactly k images per class."""
from __future__ import annotations

import torch


def sample(labels: torch.Tensor, shots: int, seed: int, n_classes: int,
           exclude: list[int] | None = None) -> list[int]:
    """Indices of `shots` examples of every class (classes in `exclude` left out), sorted.

    The draw for one class does not depend on the other classes, so adding a class or
    excluding one keeps the others' samples unchanged.
    """
    if shots <= 0:
        raise ValueError(f"shots must be positive, got {shots}")
    out: list[int] = []
    for c in range(n_classes):
        if exclude and c in exclude:
            continue
        pool = torch.nonzero(labels == c).flatten()
        if len(pool) < shots:
            raise ValueError(f"class {c} has {len(pool)} training images, fewer than shots={shots}")
        g = torch.Generator().manual_seed(seed * 100_003 + c)
        out.extend(pool[torch.randperm(len(pool), generator=g)[:shots]].tolist())
    return sorted(out)
