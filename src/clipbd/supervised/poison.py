"""Poisoned training sets for classifiers, triggered test images, and the seeded draws.

* `victim_indices`: the victim's training subset (`n_train` of the prepared split, seeded).
* `poison_train`: round(rate * N) images get the trigger (BackdoorBench's pratio is a share of
  the whole training set); poison-label attacks draw them among non-target images and relabel
  them to the target, clean-label ones (SIG, lc) among target images, labels kept. WaNet adds
  `cross_ratio * n_poison` noise-mode "cross" images (warp + random grid noise, labels kept).
* `tuning_indices`: FST's clean tuning set, a `fraction` of the training set (choose_index_v2),
  drawn from the victim's subset and taken with its clean images and true labels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clipbd.attacks.base import Attack
from clipbd.data.store import ImageSet, to_float, to_uint8
from clipbd.poison import apply_in_batches


def _draw(pool: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return pool[torch.randperm(len(pool), generator=g)[:n]].sort().values


def victim_indices(n_total: int, n_train: int | None, seed: int) -> torch.Tensor:
    n = min(n_train or n_total, n_total)
    return _draw(torch.arange(n_total), n, seed)


def tuning_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Positions (in the victim's subset) of the clean tuning images; at least one per batch."""
    return _draw(torch.arange(n), max(1, round(fraction * n)), seed + 7)


def poison_train(data: ImageSet, attack: Attack, trigger: dict, rate: float, target: int,
                 clean_label: bool, seed: int) -> ImageSet:
    n_poison = round(rate * len(data))
    pool = torch.nonzero((data.labels == target) if clean_label
                         else (data.labels != target)).flatten()
    if n_poison > len(pool):
        kind = "target-class" if clean_label else "non-target"
        raise ValueError(f"poison_rate={rate} asks for {n_poison} poisoned images but the "
                         f"training subset has only {len(pool)} {kind} images")
    chosen = _draw(pool, n_poison, seed)
    data = data.materialized()  # a small subset; written in place below
    images, labels = data.images.clone(), data.labels.clone()
    if n_poison:
        pre = getattr(attack, "pre_poison", None)  # label-consistent: adversarial first
        base = pre(data, chosen, seed) if pre else images[chosen]
        images[chosen] = apply_in_batches(attack, base, trigger, seed + 1)
        labels[chosen] = target
    poisoned = torch.zeros(len(data), dtype=torch.bool)
    poisoned[chosen] = True
    extra = {"poisoned": poisoned}
    n_cross = round(attack.cfg.get("cross_ratio", 0) * n_poison)
    if n_cross:
        cross = _draw(torch.nonzero(~poisoned).flatten(), n_cross, seed + 2)
        images[cross] = wanet_cross(attack, images[cross], trigger, seed + 3)
        extra["cross"] = torch.zeros(len(data), dtype=torch.bool).index_fill_(0, cross, True)
    return ImageSet(images, labels, data.classes, data.ids, None, extra)


def wanet_cross(attack: Attack, images: torch.Tensor, trigger: dict, seed: int) -> torch.Tensor:
    """WaNet noise mode: the trigger's warp plus uniform grid noise in ±1/S, per image."""
    g = torch.Generator().manual_seed(seed)
    x = to_float(images)
    s = attack.image_size
    grid = attack.grid(trigger).expand(len(x), -1, -1, -1)
    grid = (grid + (torch.rand(len(x), s, s, 2, generator=g) * 2 - 1) / s).clamp(-1, 1)
    return to_uint8(F.grid_sample(x, grid, align_corners=True))


def triggered(test: ImageSet, attack: Attack, trigger: dict, seed: int) -> torch.Tensor:
    """uint8 triggered copies of every test image (quantized like saved PNGs)."""
    return apply_in_batches(attack, test.images, trigger, seed + 2)
