"""Caption corpora from a CSV file (a CC3M subset: image path + caption per row).

`datasets.<name>.path` is the CSV (header row; columns `image_column`, default `image`,
and `caption_column`, default `caption`, as in the CleanCLIP/BadCLIP CSVs); `separator` is
the field delimiter (open_clip_train's `--csv-separator`: default ",", "\t" for its TSVs).
Image paths are relative to `image_root` (default: the CSV's folder). `n_train` draws a
seeded subset of the rows (e.g. 500K of CC3M for poisoning, 250K for CleanCLIP). The whole
corpus is the `train` split; `test` is empty. Every image gets the one pseudo-class
CAPTION_CLASS: the stored captions, not class templates, caption its pairs.
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

from clipbd.data.entries import Entries
from clipbd.data.store import ImageSet

CAPTION_CLASS = "(captioned)"


def classes(ds: dict) -> list[str]:
    return [CAPTION_CLASS]


def image_root(ds: dict) -> Path:
    return Path(ds.get("image_root") or Path(ds["path"]).parent)


def missing(name: str, ds: dict) -> list[tuple[str, str, str]]:
    """(config key, path, fix) per missing path of this dataset block."""
    key = f"datasets.{name}"
    out = []
    if not Path(ds["path"]).is_file():
        out.append((f"{key}.path", ds["path"], "point it at a CSV with an image-path column and "
                    "a caption column (e.g. a CC3M subset)"))
    if ds.get("image_root") and not Path(ds["image_root"]).is_dir():
        out.append((f"{key}.image_root", ds["image_root"], "set it to the folder the CSV's "
                    "image paths are relative to"))
    return out


def separator(ds: dict, name: str = "") -> str:
    """The field delimiter: one character (csv's rule), "\t" for open_clip_train's TSVs."""
    sep = ds.get("separator", ",")
    if not isinstance(sep, str) or len(sep) != 1:
        raise ValueError(f"config key `datasets.{name or '<name>'}.separator`: expected one "
                         f"character, got {sep!r}; use \",\" for a CSV or \"\\t\" (double-quoted "
                         "in YAML) for a TSV")
    return sep


def read_rows(ds: dict, name: str = "") -> list[tuple[str, str]]:
    img_col = ds.get("image_column", "image")
    cap_col = ds.get("caption_column", "caption")
    sep = separator(ds, name)
    with open(ds["path"], newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=sep)
        cols = reader.fieldnames or []
        for col, key in ((img_col, "image_column"), (cap_col, "caption_column")):
            if col not in cols:
                raise ValueError(f"{ds['path']}: no column {col!r} (columns: {', '.join(cols)}); "
                                 f"set `{key}` (or `separator`) in the dataset's config block")
        rows = [(r[img_col], r[cap_col]) for r in reader]
    bad = [i for i, (img, cap) in enumerate(rows) if not img or not cap.strip()]
    if bad:
        raise ValueError(f"{ds['path']}: row {bad[0] + 2} has an empty image path or caption")
    return rows


def entries(ds: dict, split: str, seed: int, name: str = "") -> Entries:
    """The corpus's image paths and captions before decoding (`n_train`: a seeded draw)."""
    if split != "train":
        return Entries(classes(ds), [], [], [], [])
    rows = read_rows(ds, name)
    cap = ds.get("n_train")
    if cap and len(rows) > cap:
        rng = random.Random(f"{seed}/{name}/rows")
        rows = [rows[i] for i in sorted(rng.sample(range(len(rows)), cap))]
    root = image_root(ds)
    absent = [img for img, _ in rows if not (root / img).is_file()]
    if absent:
        raise FileNotFoundError(f"{ds['path']}: {len(absent)} image(s) not found under {root}, "
                                f"first {absent[0]}; fix `image_root` or the CSV")
    return Entries(classes(ds), [str(root / img) for img, _ in rows], [0] * len(rows),
                   [f"{name}/{img}" for img, _ in rows], [c.strip() for _, c in rows])


def load(ds: dict, split: str, image_size: int, seed: int, name: str = "") -> ImageSet:
    """The split decoded in memory (`prepare` streams `entries` instead)."""
    from clipbd.data.decode import in_memory

    return in_memory(entries(ds, split, seed, name), image_size)
