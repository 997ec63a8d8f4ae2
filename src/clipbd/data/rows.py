"""Image rows on disk: a split's uint8 [N,H,W,3] images read a batch at a time, never whole.

A prepared split is one safetensors file. Its `images` tensor is the last block of the file;
`Rows` reads the rows it is asked for with `os.pread` (contiguous runs in one call each), so
a job's memory follows its batch size, not the split (ImageNet val at 224 px is 7.5 GB, a
500K CC3M corpus 75 GB). Not a memory map: pages a map touches count as the job's resident
memory, which SLURM's memory accounting (jobacct_gather/linux) then holds against it.

`SplitWriter` writes such a file in one pass: the header and every small tensor first (their
sizes are known before any image is decoded), then the images as they come, batch by batch.
The result is a plain safetensors file (`safetensors.safe_open` reads it).
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from clipbd.artifacts import atomic_path

_DTYPES = {torch.uint8: "U8", torch.int64: "I64", torch.bool: "BOOL", torch.float32: "F32",
           torch.int32: "I32", torch.float64: "F64"}


class LazyRows:
    """uint8 rows [N,H,W,3] read on indexing: an int (one row [H,W,3]), a slice, an index
    tensor or list (negatives from the end, repeats allowed) or a bool mask gives a tensor of
    only those rows. Subclasses set `shape` and implement `take(int64 positions)`."""

    dtype = torch.uint8
    ndim = 4
    shape: tuple[int, ...]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> torch.Tensor:
        n = len(self)
        if _is_scalar(key):
            return self.take(row_indices([int(key)], n))[0]
        if isinstance(key, slice):
            return self.take(torch.arange(*key.indices(n)))
        return self.take(row_indices(key, n))

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def batches(self, size: int) -> Iterator[torch.Tensor]:
        for i in range(0, len(self), size):
            yield self[i:i + size]

    def numpy(self) -> np.ndarray:  # everything: for small sets and tests only
        return self[:].numpy()


class Rows(LazyRows):
    """The image rows of a split file, read with `os.pread`, one read per contiguous run."""

    def __init__(self, path: str | os.PathLike, offset: int, shape: tuple[int, ...]):
        self.path, self.offset, self.shape = str(path), int(offset), tuple(int(s) for s in shape)
        self.row_bytes = int(np.prod(self.shape[1:]))

    def __repr__(self) -> str:
        return f"Rows({self.path!r}, shape={self.shape})"

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, slice) and key.step in (None, 1):  # one read, no index
            start, stop, _ = key.indices(len(self))
            return self._read(start, max(stop, start))
        return super().__getitem__(key)

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows `idx` (in that order, repeats allowed), one read per contiguous run."""
        out = torch.empty((len(idx), *self.shape[1:]), dtype=torch.uint8)
        if not len(idx):
            return out
        uniq, inverse = torch.unique(idx, sorted=True, return_inverse=True)
        got = torch.empty((len(uniq), *self.shape[1:]), dtype=torch.uint8)
        u = uniq.tolist()
        begin = 0
        for k in range(1, len(u) + 1):
            if k == len(u) or u[k] != u[k - 1] + 1:
                got[begin:k] = self._read(u[begin], u[k - 1] + 1)
                begin = k
        out[:] = got[inverse]
        return out

    def _read(self, start: int, stop: int) -> torch.Tensor:
        count = (stop - start) * self.row_bytes
        if not count:
            return torch.empty((stop - start, *self.shape[1:]), dtype=torch.uint8)
        buf = bytearray(count)
        view = memoryview(buf)
        with open(self.path, "rb", buffering=0) as f:
            done = 0
            while done < count:
                got = os.preadv(f.fileno(), [view[done:]],
                                self.offset + start * self.row_bytes + done)
                if got <= 0:
                    raise OSError(f"{self.path}: file ends inside the images (truncated?)")
                done += got
        return torch.frombuffer(buf, dtype=torch.uint8).view(stop - start, *self.shape[1:])


def row_indices(key, n: int) -> torch.Tensor:
    """int64 row numbers in [0, n) of an index tensor/list (negatives count from the end) or a
    bool mask of length n."""
    idx = torch.as_tensor(key)
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise IndexError(f"bool mask of shape {tuple(idx.shape)} for {n} rows")
        idx = idx.nonzero().flatten()
    idx = idx.long().flatten()
    if len(idx) and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return torch.where(idx < 0, idx + n, idx)


def _is_scalar(key) -> bool:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return True
    return torch.is_tensor(key) and key.ndim == 0 and key.dtype != torch.bool


class ConcatRows(LazyRows):
    """Several row sources (`Rows` or uint8 tensors, same row shape) indexed as one, lazily:
    the pretraining corpus of several splits without concatenating their images in memory."""

    def __init__(self, parts: list):
        if not parts:
            raise ValueError("ConcatRows needs at least one part")
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"parts differ in row shape: {sorted(shapes)}")
        self.parts = list(parts)
        self.ends = torch.tensor([len(p) for p in parts], dtype=torch.long).cumsum(0)
        self.shape = (int(self.ends[-1]), *shapes.pop())

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        part = torch.searchsorted(self.ends, idx, right=True)
        starts = self.ends - torch.tensor([len(p) for p in self.parts])
        out = torch.empty((len(idx), *self.shape[1:]), dtype=torch.uint8)
        for j, rows in enumerate(self.parts):  # one gather per part
            sel = part == j
            if sel.any():
                out[sel] = rows[idx[sel] - starts[j]]
        return out


def strings_to_tensors(strings: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(utf-8 bytes uint8 [B], offsets int64 [n+1]): a string column stored as tensors, not in
    the header (safetensors caps headers at 100 MB, ~1.1M captions)."""
    data = [s.encode() for s in strings]
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in data], out=offsets[1:])
    return torch.frombuffer(bytearray(b"".join(data)) or bytearray(1), dtype=torch.uint8
                            )[:offsets[-1]].clone(), torch.from_numpy(offsets)


def tensors_to_strings(data: torch.Tensor, offsets: torch.Tensor) -> list[str]:
    raw, cuts = data.numpy().tobytes(), offsets.tolist()
    return [raw[a:b].decode() for a, b in zip(cuts[:-1], cuts[1:])]


def _meta(tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]], order: list[str],
          metadata: dict[str, str]) -> tuple[bytes, dict[str, int]]:
    head, starts, pos = {}, {}, 0
    for name in order:
        dtype, shape = tensors[name]
        size = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
        head[name] = {"dtype": _DTYPES[dtype], "shape": list(shape),
                      "data_offsets": [pos, pos + size]}
        starts[name] = pos
        pos += size
    head["__metadata__"] = metadata
    text = json.dumps(head, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, starts


class SplitWriter:
    """Write `small` tensors, then `n` image rows [H,W,3] given in order through `write`."""

    def __init__(self, f, n: int, row_shape: tuple[int, int, int],
                 small: dict[str, torch.Tensor], metadata: dict[str, str]):
        self.f, self.n, self.row_shape, self.written = f, n, tuple(row_shape), 0
        self._rows_sha256 = hashlib.sha256()
        small = {k: v.detach().contiguous().cpu() for k, v in small.items()}
        self._labels = small.get("labels")
        shapes = {k: (v.dtype, tuple(v.shape)) for k, v in small.items()}
        shapes["images"] = (torch.uint8, (n, *self.row_shape))
        header, _ = _meta(shapes, sorted(small) + ["images"], metadata)
        f.write(header)
        for k in sorted(small):
            f.write(small[k].numpy().tobytes())

    def write(self, images: torch.Tensor | np.ndarray) -> None:
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != self.row_shape:
            raise ValueError(f"rows must be uint8 [*, {self.row_shape}], got {images.dtype} "
                             f"{tuple(images.shape)}")
        if self.written + len(images) > self.n:
            raise ValueError(f"more than the {self.n} rows announced")
        raw = images.contiguous().numpy().tobytes()
        self.f.write(raw)
        self._rows_sha256.update(raw)
        self.written += len(images)

    def content_sha256(self) -> str:
        """sha256 of the rows written, then of the `labels` column: `ImageSet.content_hash` of
        the split, computed on the way instead of by reading it back."""
        digest = self._rows_sha256.copy()
        if self._labels is not None:
            digest.update(self._labels.numpy().tobytes())
        return digest.hexdigest()


@contextmanager
def split_writer(path: str | os.PathLike, n: int, row_shape: tuple[int, int, int],
                 small: dict[str, torch.Tensor], metadata: dict[str, str]
                 ) -> Iterator[SplitWriter]:
    """Atomic: the file appears at `path` only once all `n` rows were written."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        w = SplitWriter(f, n, row_shape, small, metadata)
        yield w
        if w.written != n:
            raise ValueError(f"{path}: {w.written} rows written, {n} announced")


def images_rows(path: str | os.PathLike) -> tuple[Rows, dict, int]:
    """(lazy `images`, the parsed header, where the data starts) of a split file."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        head = json.loads(f.read(n))
    info = head["images"]
    return Rows(Path(path), 8 + n + info["data_offsets"][0], tuple(info["shape"])), head, 8 + n
