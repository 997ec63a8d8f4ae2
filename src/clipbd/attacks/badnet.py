"""BadNet: a small noise patch pasted onto the image.

The lineage (CleanCLIP/BadCLIP) pastes a 16x16 patch at 224 px (about 7% of the side) of
N(0,1) noise added to the image's per-channel mean, resampled for every image, at a random
position. Here the pattern is drawn once from the seed and stored (papers.md decision 2);
`fixed_pattern: false` restores the per-image noise.
"""
from __future__ import annotations

import torch

from clipbd.attacks import register
from clipbd.attacks.base import Attack


@register("badnet")
class BadNet(Attack):
    def make_trigger(self, seed: int) -> dict[str, torch.Tensor]:
        p = self.cfg["patch_size"]
        g = torch.Generator().manual_seed(seed)
        return {"pattern": (0.5 + torch.randn(3, p, p, generator=g)).clamp(0, 1)}

    def positions(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Top-left (row, col) of the patch for each of n images, [n, 2]."""
        p, s = self.cfg["patch_size"], self.image_size
        where = self.cfg["location"]
        if where == "random":
            return torch.randint(0, s - p + 1, (n, 2), generator=gen)
        corner = {"corner": s - p - 1, "center": (s - p) // 2}[where]
        return torch.full((n, 2), corner, dtype=torch.long)

    def apply(self, x, trigger, gen):
        p = self.cfg["patch_size"]
        out = x.clone()
        pos = self.positions(len(x), gen)
        for i, (r, c) in enumerate(pos.tolist()):
            if self.cfg["fixed_pattern"]:
                patch = trigger["pattern"]
            else:
                mean = x[i].mean(dim=(1, 2)).view(3, 1, 1)
                patch = (mean + torch.randn(3, p, p, generator=gen)).clamp(0, 1)
            out[i, :, r:r + p, c:c + p] = patch
        return out
