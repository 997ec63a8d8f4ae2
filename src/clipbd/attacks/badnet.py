"""BadNet: a small noise patch pasted onto the image.

The lineage (CleanCLIP/BadCLIP `backdoor/utils.py`, `patch_type=random`) pastes a 16x16 patch
at 224 px (about 7% of the side) of N(0,1) noise added to the image's per-channel mean,
resampled for every image, at a random position. Here the pattern is drawn once from the seed
and stored (decision 2, docs/methods.md, "Project decisions"); `fixed_pattern: false` restores
the per-image noise.

Mean + N(0,1) leaves [0,1] for most pixels. `noise_overflow` says what then happens:
* `clamp` (the default): clipped to [0,1], so 61-64% of the patch's pixels are 0 or 255;
* `wrap`: what the lineage's save path does. Its image is never clipped: torchvision's
  `to_pil_image` turns the float tensor into bytes with `mul(255).byte()`, and torch casts
  float to uint8 through int64, i.e. truncation toward zero, then modulo 256 (-3.7 -> 253,
  300.5 -> 44). Pixels inside [0,1] are unchanged by this (k/255 * 255 truncates back to k).
  255 * N(0,1) spans hundreds of steps, so the wrapped patch is a near-uniform random patch.
  Every poisoned pair and triggered test image of the lineage went through that path.
`wrap` applies the same rule to the stored pattern (0.5 + N(0,1)) of `fixed_pattern: true`.
"""
from __future__ import annotations

import torch

from clipbd.attacks import register
from clipbd.attacks.base import Attack

OVERFLOW = ("clamp", "wrap")


def wrap_bytes(v: torch.Tensor) -> torch.Tensor:
    """Values in [0,1] units as the lineage saves them: trunc(255 v) mod 256, back as k/255."""
    return ((v * 255).to(torch.int64) % 256).to(v.dtype) / 255


@register("badnet")
class BadNet(Attack):
    title = "BadNet"
    order = 1

    def bound(self, v: torch.Tensor) -> torch.Tensor:
        mode = self.cfg.get("noise_overflow", "clamp")
        if mode == "clamp":
            return v.clamp(0, 1)
        if mode == "wrap":
            return wrap_bytes(v)
        raise ValueError(f"attacks.badnet.noise_overflow must be one of {OVERFLOW}, got {mode!r}")

    def make_trigger(self, seed: int) -> dict[str, torch.Tensor]:
        p = self.cfg["patch_size"]
        g = torch.Generator().manual_seed(seed)
        return {"pattern": self.bound(0.5 + torch.randn(3, p, p, generator=g))}

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
                patch = self.bound(mean + torch.randn(3, p, p, generator=gen))
            out[i, :, r:r + p, c:c + p] = patch
        return out
