"""A poisoned fine-tuning corpus stored as an index into the clean splits, not as a copy.

Most pairs of a poisoned corpus keep their clean image; only the poisoned pairs and the
image-only decoys carry a trigger. So the corpus file (one safetensors file, `poison`'s
output) holds per pair the source split (`source`, an index into the header's `sources`)
and its `row` there, `slot` (its row among the stored images, -1: the clean source row),
the labels, masks, ids and captions; its `images` are only the changed rows. The header's
`corpus` entry names each source: dataset, the split's path as the rule passed it (relative
to the workflow root) and that file's sha256 when the corpus was built.

`load_corpus` gives an `ImageSet` whose `images` is a `CorpusImages`: a lazy view with the
indexing API of `Rows` that reads clean rows from the source splits and changed rows from
the corpus file, a batch at a time. At paper scale (500K CC3M pairs, 75 GB) this replaces a
full copy per attack x variant x seed by a few hundred MB of triggered rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from clipbd.artifacts import check_safetensors_header, file_sha256
from clipbd.data.rows import LazyRows, Rows, images_rows
from clipbd.data.store import BATCH, ImageSet, _load, split_stream

FORMAT = 1
INDEX = ("source", "row", "slot")  # per-pair columns of the index, besides labels and masks


class StaleCorpus(ValueError):
    """A source split of a poisoned corpus is missing or is not the file it was built from."""


class CorpusImages(LazyRows):
    """uint8 rows [N,H,W,3]: pair k is `changed[slot[k]]` if slot[k] >= 0, else
    `sources[source[k]][row[k]]`. Indexing reads only the rows asked for (index tensors into
    each source: `Rows` reads them from disk); `select` is a lazy subset."""

    def __init__(self, sources: list, source: torch.Tensor, row: torch.Tensor,
                 slot: torch.Tensor | None = None, changed=None):
        self.sources, self.source, self.row = list(sources), source.long(), row.long()
        self.slot = torch.full_like(self.row, -1) if slot is None else slot.long()
        shapes = {tuple(s.shape[1:]) for s in self.sources}
        if len(shapes) != 1:
            raise ValueError(f"source splits differ in image size: {sorted(shapes)}")
        self.row_shape = shapes.pop()
        self.changed = changed if changed is not None else torch.empty((0, *self.row_shape),
                                                                        dtype=torch.uint8)
        if tuple(self.changed.shape[1:]) != self.row_shape:
            raise ValueError(f"changed rows {tuple(self.changed.shape)} do not match the "
                             f"sources' image size {self.row_shape}")
        self.shape = (len(self.row), *self.row_shape)

    def __repr__(self) -> str:
        return f"CorpusImages(shape={self.shape}, changed={len(self.changed)})"

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Pairs `idx` (in that order): one indexed read per source, one of the changed rows."""
        out = torch.empty((len(idx), *self.row_shape), dtype=torch.uint8)
        slot, source, row = self.slot[idx], self.source[idx], self.row[idx]
        own = slot >= 0
        if own.any():
            out[own] = self.changed[slot[own]]
        for s, images in enumerate(self.sources):
            pick = ~own & (source == s)
            if pick.any():
                out[pick] = images[row[pick]]
        return out

    def select(self, idx: torch.Tensor) -> "CorpusImages":
        """The pairs `idx` as a view of their own (nothing is read)."""
        return CorpusImages(self.sources, self.source[idx], self.row[idx], self.slot[idx],
                            self.changed)


def save_corpus(path, data: ImageSet, sources: list[dict]) -> None:
    """Write `data` (its `images` a `CorpusImages`) as a corpus file; `sources`: one
    {"name", "path", "sha256"} per source split, in the order `source` indexes them."""
    view = data.images
    if not isinstance(view, CorpusImages) or len(sources) != len(view.sources):
        raise ValueError("save_corpus needs a CorpusImages with one entry of `sources` each")
    index = {"source": view.source, "row": view.row, "slot": view.slot}
    meta = {"corpus": {"format": FORMAT, "sources": sources}}
    with split_stream(path, len(view.changed), view.row_shape, classes=data.classes,
                      ids=data.ids, labels=data.labels, captions=data.captions,
                      extra={**data.extra, **index}, meta=meta) as w:
        for i in range(0, len(view.changed), BATCH):
            w.write(view.changed[i:i + BATCH])


def corpus_sources(path) -> list[dict]:
    """The header's source splits ({"name", "path", "sha256"}) of a corpus file."""
    check_safetensors_header(path)
    meta = images_rows(path)[1].get("__metadata__") or {}
    if "corpus" not in meta:
        raise StaleCorpus(f"{path}: not a poisoned corpus in the index format (a full copy "
                          "written by older code?); rerun `poison` for it (snakemake "
                          "--forcerun poison)")
    return json.loads(meta["corpus"])["sources"]


def _open_source(corpus, src: dict, root: Path) -> Rows:
    """The images of one source split, after checking it is the file the corpus was built on."""
    p = root / src["path"]
    fix = (f"rerun `poison` for {corpus} (snakemake --forcerun poison), or restore the split "
           "it was built from")
    if not p.is_file():
        raise StaleCorpus(f"{corpus}: its source split {p} ({src['name']}) is missing "
                          f"(relative paths are read from the workflow root); {fix}")
    if file_sha256(p) != src["sha256"]:
        raise StaleCorpus(f"{corpus}: its source split {p} ({src['name']}) changed since the "
                          f"corpus was built (sha256 {file_sha256(p)[:12]} != recorded "
                          f"{src['sha256'][:12]}); {fix}")
    check_safetensors_header(p)
    return images_rows(p)[0]


def load_corpus(path, root=".") -> ImageSet:
    """A corpus file as an `ImageSet` whose images are read lazily from the corpus and its
    (checked) source splits, in the corpus's pair order. `root`: the workflow root, which the
    recorded source paths are relative to (jobs run there)."""
    sources = [_open_source(path, s, Path(root)) for s in corpus_sources(path)]
    changed, labels, classes, ids, captions, cols, _ = _load(path)
    index = {k: cols.pop(k) for k in INDEX}
    view = CorpusImages(sources, index["source"], index["row"], index["slot"], changed)
    return ImageSet(view, labels, classes, ids, captions, cols)
