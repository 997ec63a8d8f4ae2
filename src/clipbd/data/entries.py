"""What a dataset reader lists before any image is decoded: one entry per image.

Readers (`clipbd.data.FILE_KINDS`) return `Entries`; `prepare` decodes the sources in
parallel and streams the rows into the split file, so no split is ever held in memory.
A source is a picklable reference the decoder can open by itself in a worker process:
a file path (str), or (tar path, byte offset, byte size) for a member of a tar shard.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Entries:
    classes: list[str]
    sources: list  # str path | (tar path, offset, size)
    labels: list[int]
    ids: list[str]
    captions: list[str] | None = None

    def __post_init__(self):
        n = len(self.sources)
        if len(self.labels) != n or len(self.ids) != n:
            raise ValueError("sources, labels and ids differ in length")
        if self.captions is not None and len(self.captions) != n:
            raise ValueError("captions and sources differ in length")

    def __len__(self) -> int:
        return len(self.sources)
