"""Image folders, one subfolder per class: ImageNet, Caltech101, OxfordPets, ImageNet-V2/A/R/S.

Layout under `datasets.<name>.path`: `<train_dir>/<class folder>/<image>` and
`<test_dir>/<class folder>/<image>` (`train_dir: null` = a test-only set such as ImageNet-V2;
`test_dir: "."` = the classes sit directly under `path`). Labels follow the sorted class
folders of the test split. Class names come from the folder names, or from `classnames`:
a file of one name per line (paired with the sorted folders), of `folder<TAB>name` lines or
of `<wnid> <name>` lines (CoOp's / ImageNet's synset files; both are mappings, so folders
absent from the split are skipped), or open_clip's built-in `openai_imagenet` names
(`clipbd.data.classnames` has the details).

Images are read with Pillow, converted to RGB, resized (bicubic) so the shorter side is
`image_size`, then centre-cropped: CLIP's own preprocessing before normalization.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from clipbd.data import classnames
from clipbd.data.entries import Entries
from clipbd.data.store import ImageSet

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def load_image(path, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: shorter side resized to `size`, centre crop (`path`: a file path
    or an open binary file, e.g. a tar member's bytes)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).copy()


def split_dir(ds: dict, split: str) -> Path | None:
    sub = ds.get(f"{split}_dir", "train" if split == "train" else "test")
    return None if sub is None else Path(ds["path"]) / sub


def class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def folders_and_classes(ds: dict) -> tuple[list[str], list[str]]:
    root = split_dir(ds, "test")
    folders = class_folders(root)
    if not folders:
        raise ValueError(f"{root}: no class subfolders")
    names = classnames.read(ds["classnames"], folders, ds.get("wnids")) \
        if ds.get("classnames") else folders
    return folders, names


def classes(ds: dict) -> list[str]:
    return folders_and_classes(ds)[1]


def missing(name: str, ds: dict) -> list[tuple[str, str, str]]:
    """(config key, path, fix) per missing path of this dataset block."""
    key = f"datasets.{name}"
    if not Path(ds["path"]).is_dir():
        return [(f"{key}.path", ds["path"], "set it to the dataset root (split folders holding "
                 "one subfolder per class)")]
    out = []
    for split in ("train", "test"):
        d = split_dir(ds, split)
        if d is not None and not d.is_dir():
            out.append((f"{key}.{split}_dir", str(d), f"name the {split} split's subfolder of "
                        "`path`" + (" (null: a test-only set)" if split == "train" else "")))
    files = classnames.class_files(ds)  # not `openai_imagenet`
    for k in ("classnames", "wnids"):
        if ds.get(k) in files and not Path(ds[k]).is_file():
            out.append((f"{key}.{k}", ds[k], "point it at a class-name file, or remove the key "
                        "to use the folder names" if k == "classnames" else
                        "point it at a file of `<wnid> <name>` lines in class order"))
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def entries(ds: dict, split: str, seed: int, name: str = "") -> Entries:
    """The split's images (paths), labels and ids, before decoding: the seeded draws of
    `<split>_per_class` then `n_<split>`, in file order."""
    folders, names = folders_and_classes(ds)
    root = split_dir(ds, split)
    if root is None:  # test-only dataset: an empty training split
        return Entries(names, [], [], [])
    per_class = ds.get(f"{split}_per_class")
    rng = random.Random(f"{seed}/{name}/{split}")
    items: list[tuple[Path, int]] = []
    for label, folder in enumerate(folders):
        files = _files(root / folder) if (root / folder).is_dir() else []
        if per_class and len(files) > per_class:  # seeded draw, kept in file order
            files = sorted(rng.sample(files, per_class))
        items.extend((f, label) for f in files)
    cap = ds.get(f"n_{split}")
    if cap and len(items) > cap:
        items = [items[i] for i in sorted(rng.sample(range(len(items)), cap))]
    ids = [f"{name}/{split}/{f.relative_to(root).as_posix()}" for f, _ in items]
    return Entries(names, [str(f) for f, _ in items], [lab for _, lab in items], ids)


def load(ds: dict, split: str, image_size: int, seed: int, name: str = "") -> ImageSet:
    """The split decoded in memory (`prepare` streams `entries` instead)."""
    from clipbd.data.decode import in_memory

    return in_memory(entries(ds, split, seed, name), image_size)
