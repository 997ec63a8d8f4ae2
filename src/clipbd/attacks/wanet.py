"""WaNet: an imperceptible warp of the image by a fixed smooth displacement field.

The lineage (CleanCLIP/BadCLIP `warped`) uses k = 224, s = 1, grid_rescale = 1 at 224 px,
i.e. k equals the image side: a noise grid uniform[-1,1] of shape [2,k,k], normalized by its
mean absolute value, bicubic-upsampled to the image side and cached to a .pt file; then
grid = clamp((identity + s*noise/S) * grid_rescale, -1, 1) and grid_sample(align_corners=True),
with no noise mode or cross samples. `k: null` (the default) follows the lineage: k = image
side. BackdoorBench's small-image setting (k = 4) is a config value away; on the tiny CLIP it
was learned much less (ASR 0.44 vs 0.79 at 5% poisoning, s = 1). The grid is drawn once from
the seed and stored (decision 2, docs/methods.md, "Project decisions"), so every image gets
the same warp.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clipbd.attacks import register
from clipbd.attacks.base import Attack


@register("wanet")
class WaNet(Attack):
    title = "WaNet"
    order = 5

    def make_trigger(self, seed: int) -> dict[str, torch.Tensor]:
        s = self.image_size
        k = self.cfg["k"] or s
        g = torch.Generator().manual_seed(seed)
        ins = torch.rand(1, 2, k, k, generator=g) * 2 - 1
        ins = ins / ins.abs().mean()
        noise = F.interpolate(ins, size=(s, s), mode="bicubic", align_corners=True)
        return {"noise_grid": noise[0].permute(1, 2, 0).contiguous()}  # [S,S,2]

    def grid(self, trigger: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sampling grid [1,S,S,2] in grid_sample's (x=column, y=row) order."""
        s = self.image_size
        line = torch.linspace(-1, 1, s)
        rows, cols = torch.meshgrid(line, line, indexing="ij")
        identity = torch.stack((cols, rows), dim=2)
        g = (identity + self.cfg["s"] * trigger["noise_grid"] / s) * self.cfg["grid_rescale"]
        return g.clamp(-1, 1).unsqueeze(0)

    def apply(self, x, trigger, gen):
        g = self.grid(trigger).to(x).expand(len(x), -1, -1, -1)
        return F.grid_sample(x, g, align_corners=True).clamp(0, 1)
