"""A prepared split: uint8 images [N,H,W,3], int64 labels, class names, captions (optional).

On disk one safetensors file (`clipbd.data.rows`): ids and captions as string columns in
tensors, the images last; `load_split` reads everything but the images, which stay on disk
as `Rows` and are read a batch at a time.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from clipbd.artifacts import check_safetensors_header
from clipbd.data.rows import (Rows, SplitWriter, images_rows, split_writer, strings_to_tensors,
                              tensors_to_strings)

BATCH = 1024  # rows per read or write when a whole split is streamed


@dataclass
class ImageSet:
    images: torch.Tensor | Rows  # uint8 [N,H,W,3]; Rows: on disk, read on indexing
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    ids: list[str]
    captions: list[str] | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.images)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [N,H,W,3], got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if len(self.labels) != n or len(self.ids) != n:
            raise ValueError("images, labels and ids differ in length")
        if self.captions is not None and len(self.captions) != n:
            raise ValueError("captions and images differ in length")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: list[int] | torch.Tensor) -> "ImageSet":
        idx = torch.as_tensor(idx, dtype=torch.long)
        il = idx.tolist()
        return ImageSet(self.images[idx], self.labels[idx], self.classes,
                        [self.ids[i] for i in il],
                        None if self.captions is None else [self.captions[i] for i in il],
                        {k: v[idx] for k, v in self.extra.items()})

    def content_hash(self) -> str:
        """sha256 of the image bytes then the label bytes, streamed a batch at a time."""
        h = hashlib.sha256()
        for i in range(0, len(self), BATCH):
            h.update(self.images[i:i + BATCH].contiguous().numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()

    def materialized(self) -> "ImageSet":
        """The same set with its images in memory (small splits: the supervised track, tests)."""
        if isinstance(self.images, torch.Tensor):
            return self
        return ImageSet(self.images[:], self.labels, self.classes, self.ids, self.captions,
                        self.extra)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float [N,3,H,W] in [0,1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [N,3,H,W] in [0,1] -> uint8 [N,H,W,3] (rounded, as a saved PNG would be)."""
    return x.clamp(0, 1).mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _columns(labels, ids, captions, extra) -> dict[str, torch.Tensor]:
    cols = {"labels": torch.as_tensor(labels, dtype=torch.long), **extra}
    cols["ids_bytes"], cols["ids_offsets"] = strings_to_tensors(ids)
    if captions is not None:
        cols["captions_bytes"], cols["captions_offsets"] = strings_to_tensors(captions)
    return cols


@contextmanager
def split_stream(path, n: int, row_shape: tuple[int, int, int], *, classes: list[str],
                 ids: list[str], labels, captions: list[str] | None = None,
                 extra: dict[str, torch.Tensor] | None = None,
                 meta: dict | None = None) -> Iterator[SplitWriter]:
    """Write a split whose images come batch by batch (`writer.write(uint8 [b,H,W,3])`)."""
    header = {k: json.dumps(v) for k, v in {"classes": classes, **(meta or {})}.items()}
    with split_writer(path, n, row_shape, _columns(labels, ids, captions, extra or {}),
                      header) as w:
        yield w


def save_split(path, data: ImageSet, meta: dict | None = None) -> None:
    with split_stream(path, len(data), tuple(data.images.shape[1:]), classes=data.classes,
                      ids=data.ids, labels=data.labels, captions=data.captions,
                      extra=data.extra, meta=meta) as w:
        for i in range(0, len(data), BATCH):
            w.write(data.images[i:i + BATCH])


def load_split(path) -> ImageSet:
    """A split with its images left on disk (`Rows`); everything else in memory."""
    return ImageSet(*_load(path)[:-1])


def split_meta(path) -> dict:
    """The split's header entries (`classes`, `text_prefix`, ...), JSON-decoded; reads the
    header only, not the columns."""
    check_safetensors_header(path)
    raw = images_rows(path)[1].get("__metadata__") or {}
    return {k: json.loads(v) for k, v in raw.items()}


def _load(path):
    from safetensors import SafetensorError, safe_open

    check_safetensors_header(path)
    images, head, _ = images_rows(path)
    try:
        with safe_open(str(path), "pt") as f:
            cols = {k: f.get_tensor(k) for k in f.keys() if k != "images"}
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except SafetensorError as err:
        raise ValueError(f"{path}: corrupt or truncated split ({err}); delete it and rerun "
                         "the step that wrote it") from None
    strings = {}
    for name in ("ids", "captions"):
        if f"{name}_bytes" in cols:
            strings[name] = tensors_to_strings(cols.pop(f"{name}_bytes"),
                                               cols.pop(f"{name}_offsets"))
        else:  # files written before the string columns kept them in the header
            strings[name] = meta.pop(name, None)
    labels = cols.pop("labels")
    return (images, labels, meta["classes"], strings["ids"], strings["captions"], cols, meta)


def manifest(data: ImageSet, content_sha256: str | None = None) -> dict:
    """What a split holds, for its sidecar: counts and hashes. The ids and labels themselves
    are in the split; here only their sha256 (1.28M ImageNet ids as JSON would be ~80 MB).
    `content_sha256`: the content hash when the writer computed it on the way."""
    return listing(data.classes, data.labels, data.ids, content_sha256 or data.content_hash())


def listing(classes: list[str], labels: torch.Tensor, ids: list[str], content_sha256: str) -> dict:
    """`manifest` from a split's columns and its content hash (no image is read)."""
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    return {"n": len(labels), "classes": classes, "class_counts": counts,
            "ids_sha256": _sha256(json.dumps(ids, ensure_ascii=False).encode()),
            "labels_sha256": _sha256(labels.numpy().tobytes()),
            "content_sha256": content_sha256}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
