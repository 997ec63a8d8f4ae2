"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (IDX files, gzip)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipbd.data.store import ImageSet

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"


def raw_files(root: str) -> list[str]:
    return [str(Path(root) / f) for pair in FILES.values() for f in pair]


def check_root(root: str, key: str) -> None:
    missing = [f for f in raw_files(root) if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: {missing[0]} is missing. Install the Debian package "
            f"`dataset-fashion-mnist` (apt-get install dataset-fashion-mnist) or set config key "
            f"`{key}` to a folder holding the four IDX .gz files.")


def read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: IDX payload has {arr.size} bytes, header says {int(np.prod(dims))}")
    return arr.reshape(dims)


def load(root: str, split: str, image_size: int, limit: int | None = None) -> ImageSet:
    img_file, lab_file = FILES[split]
    x = read_idx(str(Path(root) / img_file))
    y = read_idx(str(Path(root) / lab_file)).astype(np.int64)
    if limit:
        x, y = x[:limit], y[:limit]
    t = torch.from_numpy(x.copy()).unsqueeze(1).float()  # [N,1,28,28]
    pad = (image_size - 28) // 2
    if pad >= 0 and 28 + 2 * pad == image_size:
        t = F.pad(t, (pad, pad, pad, pad))
    else:
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", antialias=True)
    images = t.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1)
    ids = [f"fmnist/{split}/{i}" for i in range(len(y))]
    return ImageSet(images.contiguous(), torch.from_numpy(y), CLASSES, ids)
