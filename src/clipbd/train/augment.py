"""Cheap, seeded augmentations: images [N,3,H,W] in [0,1] with torch ops, captions as words.

Every random draw comes from the caller's torch.Generator (images) or random.Random
(captions), so an augmented batch is a function of the seed. No torchvision transforms.

* `crop_flip`: random resized crop + horizontal flip, one batched affine `grid_sample`.
* `color_jitter`: brightness, contrast and saturation factors per image.
* `eda_lite`: EDA without WordNet: delete n words or swap n word pairs, n = max(1, p * words).
  [CleanCLIP-code] uses full EDA (synonyms and insertions need nltk's WordNet) and
  AutoAugment for images; these are the torch-only stand-ins.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

_GRAY = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high, generator=g)


def crop_flip(x: torch.Tensor, g: torch.Generator, scale: tuple[float, float] = (0.5, 1.0),
              ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """Crop a random box (area share in `scale`, aspect in `ratio`), resize it back, maybe flip."""
    n = len(x)
    area = _uniform(n, *scale, g)
    aspect = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), g).exp()
    sw = (area * aspect).sqrt().clamp(max=1.0)  # box side as a share of the image side
    sh = (area / aspect).sqrt().clamp(max=1.0)
    tx = (torch.rand(n, generator=g) * 2 - 1) * (1 - sw)  # box centre, kept inside the image
    ty = (torch.rand(n, generator=g) * 2 - 1) * (1 - sh)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * sign, tx
    theta[:, 1, 1], theta[:, 1, 2] = sh, ty
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_GRAY, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, g: torch.Generator, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4) -> torch.Tensor:
    """Scale brightness, contrast (around the mean gray) and saturation by factors in 1 ± s."""
    n = len(x)
    b, c, s = (_uniform(n, 1 - v, 1 + v, g).view(n, 1, 1, 1)
               for v in (brightness, contrast, saturation))
    x = (x * b).clamp(0, 1)
    mean = _gray(x).mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean).clamp(0, 1)
    gray = _gray(x)
    return ((x - gray) * s + gray).clamp(0, 1)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """CleanCLIP's image view: crop + flip, then colour jitter."""
    return color_jitter(crop_flip(x, g), g)


def eda_lite(text: str, rng: random.Random, p: float = 0.1) -> str:
    """Delete n random words or swap n random word pairs (one of the two, chosen at random)."""
    words = text.split()
    if len(words) < 2:
        return text
    n = max(1, int(p * len(words)))
    if rng.random() < 0.5:
        drop = set(rng.sample(range(len(words)), min(n, len(words) - 1)))
        words = [w for i, w in enumerate(words) if i not in drop]
    else:
        for _ in range(n):
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
    return " ".join(words)
