"""Datasets as users hold them on disk, for the tests: image folders (`<split>/<class>/<i>.png`)
and a caption CSV (`image,caption` rows next to their images), filled with seeded noise."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, hw: tuple[int, int] = (20, 24)) -> None:
    """A uniform-noise RGB image of height x width `hw`, drawn from `seed`; the suffix of
    `path` picks the format (.png lossless, .jpg as a camera writes it)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)


def image_folder(root: Path, classes: list[str], per_split: dict[str, int], *,
                 hw: tuple[int, int] = (20, 24), suffix: str = ".png", seed: int = 0) -> Path:
    """`root/<split>/<class>/<i><suffix>` for every split -> images per class in
    `per_split` (split "." = class folders directly under `root`). Image i of class c in a
    test split is drawn from seed + 100 c + 10 i + 1 (train: + 0). Returns `root`."""
    for split, n in per_split.items():
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                write_image(d / f"{i}{suffix}", seed + 100 * c + 10 * i + (split != "train"), hw)
    return root


def caption_csv(path: Path, captions: list[str], *, hw: tuple[int, int] = (20, 24),
                suffix: str = ".png", seed: int = 1000) -> Path:
    """A CSV of `image,caption` rows at `path`, row i's image `<i><suffix>` beside it (drawn
    from seed + i) and captioned captions[i]. Returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for i, caption in enumerate(captions):
            write_image(path.parent / f"{i}{suffix}", seed + i, hw)
            w.writerow([f"{i}{suffix}", caption])
    return path
