"""Blended: the image is alpha-blended with a noise pattern.

The lineage (CleanCLIP/BadCLIP `blended`) computes x' = 0.8*x + 0.2*U with U uniform noise
[3,224,224] resampled for every image, then clips to [0,1]; BackdoorBench blends a fixed
Hello-Kitty image with the same ratio. Here U is drawn once from the seed and stored
(decision 2, docs/methods.md, "Project decisions"); `fixed_pattern: false` restores the
per-image noise.
"""
from __future__ import annotations

import torch

from clipbd.attacks import register
from clipbd.attacks.base import Attack


@register("blended")
class Blended(Attack):
    title = "Blended"
    order = 2

    def make_trigger(self, seed: int) -> dict[str, torch.Tensor]:
        s = self.image_size
        g = torch.Generator().manual_seed(seed)
        return {"pattern": torch.rand(3, s, s, generator=g)}

    def apply(self, x, trigger, gen):
        a = self.cfg["alpha"]
        if self.cfg["fixed_pattern"]:
            pattern = trigger["pattern"].to(x)
        else:
            pattern = torch.rand(x.shape, generator=gen).to(x)
        return ((1 - a) * x + a * pattern).clamp(0, 1)
