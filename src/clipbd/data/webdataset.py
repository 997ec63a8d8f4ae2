"""Caption corpora as webdataset tar shards, the layout img2dataset writes (a CC3M download).

`datasets.<name>.path` is the folder of the shards (`00000.tar`, `00001.tar`, ...: every
`*.tar` in it, sorted), or a brace pattern of them (`/data/cc3m/{00000..00331}.tar`); or
`shards` is that pattern relative to `path` (`shards: "{00000..00009}.tar"`). A sample is
the members of a shard sharing a key (the member name up to the first dot of its basename):
an image (`.jpg`, `.jpeg`, `.png` or `.webp`) and its caption (`.txt`); `.json` and any
other member are ignored. Samples without an image or a non-blank caption are skipped and
counted in a warning. Shards are only listed (stdlib `tarfile`, nothing extracted): an image
is the source (tar path, data offset, size), which a worker reads with one seek and read.

As in caption_csv: `n_train` draws a seeded subset of the samples (kept in shard order), the
whole corpus is the `train` split, `test` is empty, and every image has the one pseudo-class
CAPTION_CLASS. Ids are `<name>/<shard file name>/<key>`.
"""
from __future__ import annotations

import logging
import random
import re
import tarfile
from pathlib import Path


from clipbd.data.caption_csv import CAPTION_CLASS
from clipbd.data.entries import Entries
from clipbd.data.store import ImageSet

log = logging.getLogger("clipbd")

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # preference order when a key has several
CAPTION_EXT = "txt"
_BRACE = re.compile(r"\{([^{}]*)\}")


def classes(ds: dict) -> list[str]:
    return [CAPTION_CLASS]


def expand_braces(pattern: str) -> list[str]:
    """Every name a brace pattern stands for, in order: `{00000..00002}` keeps the zero
    padding of its bounds, `{a,b}` lists; several groups multiply (as in bash)."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        padded = any(len(b) > 1 and b.startswith("0") for b in (lo, hi))
        width = max(len(lo), len(hi)) if padded else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    else:
        items = body.split(",")
    return [name for item in items for name in expand_braces(head + item + tail)]


def _pattern(ds: dict) -> tuple[str, str] | None:
    """(config key, pattern) when the shards are named by a brace pattern, else None."""
    if ds.get("shards"):
        return "shards", str(Path(ds["path"]) / ds["shards"])
    if "{" in ds["path"]:
        return "path", ds["path"]
    return None


def shard_paths(ds: dict) -> list[str]:
    """The shard files, in order: the brace pattern's names, or the folder's sorted `*.tar`."""
    pat = _pattern(ds)
    if pat is not None:
        return expand_braces(pat[1])
    root = Path(ds["path"])
    return sorted(str(p) for p in root.glob("*.tar") if p.is_file()) if root.is_dir() else []


def missing(name: str, ds: dict) -> list[tuple[str, str, str]]:
    """(config key, path, fix) per missing shard or shard folder of this dataset block."""
    key = f"datasets.{name}"
    pat = _pattern(ds)
    if pat is None:
        if shard_paths(ds):
            return []
        return [(f"{key}.path", ds["path"], "set it to the folder of the webdataset .tar "
                 "shards (img2dataset's output folder: 00000.tar, 00001.tar, ...) or to a "
                 "brace pattern of them, e.g. /data/cc3m/{00000..00331}.tar")]
    absent = [p for p in expand_braces(pat[1]) if not Path(p).is_file()]
    if not absent:
        return []
    return [(f"{key}.{pat[0]}", absent[0] if len(absent) == 1 else pat[1],
             f"{len(absent)} of the pattern's shards are absent (first {absent[0]}); fix the "
             "brace pattern (e.g. {00000..00331}.tar) or download the missing shards")]


def _split_name(member: str) -> tuple[str, str]:
    """(key, extension) of a member name: the split is at the first dot of the basename
    (a leading `./`, as `tar -C dir .` writes, is not part of the key)."""
    folder, _, base = member.removeprefix("./").rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def list_shard(path: str) -> tuple[list[tuple[str, tuple[str, int, int], str]], list[str]]:
    """One pass over a shard's headers: ([(key, image source, caption)], [skipped keys]),
    samples in the order their first member appears. Only the captions are read."""
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        tf = tarfile.open(path, "r:")
    except tarfile.ReadError as err:
        raise ValueError(f"{path}: not an uncompressed tar shard ({err}); webdataset shards "
                         "are plain .tar files as img2dataset writes them") from None
    with tf:
        for m in tf:
            if m.isfile():
                key, ext = _split_name(m.name)
                members.setdefault(key, {}).setdefault(ext, m)
        samples, skipped = [], []
        for key, by_ext in members.items():
            img = next((by_ext[e] for e in IMAGE_EXTS if e in by_ext), None)
            txt = by_ext.get(CAPTION_EXT)
            caption = tf.extractfile(txt).read().decode("utf-8").strip() if txt else ""
            if img is None or not caption:
                skipped.append(key)
                continue
            samples.append((key, (path, img.offset_data, img.size), caption))
    return samples, skipped


def entries(ds: dict, split: str, seed: int, name: str = "") -> Entries:
    """The samples of every shard, in shard order; `n_train` a seeded draw (caption_csv's)."""
    if split != "train":
        return Entries(classes(ds), [], [], [], [])
    shards = shard_paths(ds)
    if not shards:
        raise FileNotFoundError(f"config key `datasets.{name}.path`: no .tar shard found in "
                                f"{ds['path']}; set it to img2dataset's output folder")
    samples, skipped = [], []
    for shard in shards:
        got, lost = list_shard(shard)
        samples += [(Path(shard).name, *s) for s in got]
        skipped += [f"{Path(shard).name}/{k}" for k in lost]
    if skipped:
        log.warning("datasets.%s: %d sample(s) without an image or a caption skipped "
                    "(first %s)", name, len(skipped), skipped[0])
    n = ds.get("n_train")
    if n and len(samples) > n:
        rng = random.Random(f"{seed}/{name}/rows")
        samples = [samples[i] for i in sorted(rng.sample(range(len(samples)), n))]
    return Entries(classes(ds), [src for _, _, src, _ in samples], [0] * len(samples),
                   [f"{name}/{shard}/{key}" for shard, key, _, _ in samples],
                   [caption for _, _, _, caption in samples])


def read_source(source: tuple[str, int, int]) -> bytes:
    """The bytes of a tar member: (tar path, data offset, size), one seek and one read."""
    path, offset, size = source
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"{path}: member at byte {offset} truncated ({len(data)} of {size} "
                      "bytes); the shard changed since it was listed or is cut short")
    return data


def load(ds: dict, split: str, image_size: int, seed: int, name: str = "") -> ImageSet:
    """The corpus decoded in memory (`prepare` streams `entries` instead)."""
    from clipbd.data.decode import in_memory

    return in_memory(entries(ds, split, seed, name), image_size)
