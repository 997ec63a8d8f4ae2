"""A seeded synthetic dataset: coloured shapes on noisy backgrounds, labelled by shape."""
from __future__ import annotations

import numpy as np
import torch

from clipbd.data.store import ImageSet

CLASSES = ["circle", "square", "triangle", "diamond", "cross",
           "ring", "horizontal bar", "vertical bar"]


def _mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    if shape == "cross":
        w = max(r * 0.3, 1.0)
        return ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (r * 0.55) ** 2)
    if shape == "horizontal bar":
        return (np.abs(dy) <= max(r * 0.3, 1.0)) & (np.abs(dx) <= r)
    if shape == "vertical bar":
        return (np.abs(dx) <= max(r * 0.3, 1.0)) & (np.abs(dy) <= r)
    raise ValueError(shape)


def generate(n: int, image_size: int, seed: int, split: str) -> ImageSet:
    """`n` images, classes balanced (round-robin), everything else drawn from `seed`."""
    rng = np.random.default_rng([seed, {"train": 0, "test": 1}[split]])
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    images = np.empty((n, s, s, 3), dtype=np.uint8)
    for i, lab in enumerate(labels):
        bg = rng.uniform(0, 0.35, size=3)
        img = np.clip(bg + rng.normal(0, 0.05, size=(s, s, 3)), 0, 1)
        r = rng.uniform(0.22, 0.38) * s
        cy, cx = rng.uniform(r, s - r, size=2)
        colour = rng.uniform(0.45, 1.0, size=3)
        img[_mask(CLASSES[lab], yy, xx, cy, cx, r)] = colour
        images[i] = np.round(img * 255)
    ids = [f"shapes/{split}/{i}" for i in range(n)]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), CLASSES, ids)
