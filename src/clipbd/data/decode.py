"""Decoding a reader's `Entries` into split rows: in parallel, in order, a batch at a time.

`prepare` lists a split's images first (`clipbd.data.entries`), then decodes them with a
`torch.utils.data.DataLoader` (one worker process per job thread) and streams each batch
into the split file (`store.split_stream`): memory follows the batch, not the split, and the
bytes are those of decoding every image in turn (same function, same order).
"""
from __future__ import annotations

import io
import os
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clipbd.data.entries import Entries
from clipbd.data.image_folder import load_image
from clipbd.data.store import ImageSet, split_stream

DECODE_BATCH = 64  # images per worker batch: 64 x 224 px = 9.6 MB; workers x 2 batches in flight


def load_source(source, image_size: int) -> np.ndarray:
    """uint8 [size, size, 3] of one entry: a file path, or (tar path, byte offset, byte size)
    of a member of a tar shard, decoded like a file (`image_folder.load_image`)."""
    if isinstance(source, (str, os.PathLike)):
        return load_image(source, image_size)
    from clipbd.data.webdataset import read_source

    data = read_source(source)
    return load_image(io.BytesIO(data), image_size)


class Decoded(Dataset):
    """The decoded images of `sources`, one uint8 tensor [size, size, 3] per item."""

    def __init__(self, sources: list, image_size: int):
        self.sources, self.image_size = sources, image_size

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(load_source(self.sources[i], self.image_size))


def decoded_batches(sources: list, image_size: int, workers: int = 0,
                    batch: int = DECODE_BATCH) -> Iterator[torch.Tensor]:
    """uint8 [b, size, size, 3] batches of the decoded sources, in order; `workers` processes
    decode in parallel (0: in this process)."""
    loader = DataLoader(Decoded(sources, image_size), batch_size=batch, shuffle=False,
                        num_workers=workers)
    yield from loader


def write_entries(path, entries: Entries, image_size: int, workers: int = 0,
                  meta: dict | None = None) -> str:
    """Decode `entries` into the split file `path` (atomic); returns its content hash
    (`ImageSet.content_hash`: image bytes, then label bytes), computed on the way."""
    labels = torch.tensor(entries.labels, dtype=torch.long)
    with split_stream(path, len(entries), (image_size, image_size, 3), classes=entries.classes,
                      ids=entries.ids, labels=labels, captions=entries.captions,
                      meta=meta) as w:
        for batch in decoded_batches(entries.sources, image_size, workers):
            w.write(batch)
    return w.content_sha256()


def in_memory(entries: Entries, image_size: int) -> ImageSet:
    """The decoded split as an in-memory ImageSet (readers' `load`: small sets and tests)."""
    images = np.stack([load_source(s, image_size) for s in entries.sources]) if len(entries) \
        else np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    return ImageSet(torch.from_numpy(images), torch.tensor(entries.labels, dtype=torch.long),
                    entries.classes, entries.ids, entries.captions)
