"""SIG: a horizontal sinusoid added to every channel.

The lineage (BadCLIP `SIG`) adds v(i,j) = delta * sin(2*pi*j*f/224) with delta = 60/255 and
f = 6 to all channels of the 224 px image and clips to [0,1] (BadCLIP returns early; the
CleanCLIP branch without the early return would also blend it, which is not followed here).
Here the sine spans the configured image side. Unlike the original clean-label SIG
(BackdoorBench: delta 40, only target-class images poisoned), the CLIP setting is
poison-label: poisoned captions name the target (the default caption rule).
"""
from __future__ import annotations

import math

import torch

from clipbd.attacks import register
from clipbd.attacks.base import Attack


@register("sig")
class SIG(Attack):
    title = "SIG"
    order = 3

    def make_trigger(self, seed: int) -> dict[str, torch.Tensor]:
        """The signal [1,S,S]; deterministic (the seed is unused) but stored like any trigger."""
        s = self.image_size
        j = torch.arange(s, dtype=torch.float64)
        row = self.cfg["amplitude"] * torch.sin(2 * math.pi * j * self.cfg["frequency"] / s)
        return {"signal": row.float().expand(s, s).clone().unsqueeze(0)}

    def apply(self, x, trigger, gen):
        return (x + trigger["signal"].to(x)).clamp(0, 1)
