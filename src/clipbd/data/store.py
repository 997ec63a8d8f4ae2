"""A prepared split: uint8 images [N,H,W,3], int64 labels, class names, captions (optional)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from clipbd.artifacts import load_tensors, save_tensors, sha256_bytes


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 [N,H,W,3]
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
        return sha256_bytes(self.images.numpy().tobytes() + self.labels.numpy().tobytes())


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float [N,3,H,W] in [0,1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [N,3,H,W] in [0,1] -> uint8 [N,H,W,3] (rounded, as a saved PNG would be)."""
    return x.clamp(0, 1).mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def save_split(path, data: ImageSet, meta: dict | None = None) -> None:
    tensors = {"images": data.images, "labels": data.labels, **data.extra}
    header = {"classes": data.classes, "ids": data.ids, **(meta or {})}
    if data.captions is not None:
        header["captions"] = data.captions
    save_tensors(path, tensors, header)


def load_split(path) -> ImageSet:
    tensors, meta = load_tensors(path)
    extra = {k: v for k, v in tensors.items() if k not in ("images", "labels")}
    return ImageSet(tensors["images"], tensors["labels"], meta["classes"], meta["ids"],
                    meta.get("captions"), extra)


def manifest(data: ImageSet) -> dict:
    counts = torch.bincount(data.labels, minlength=len(data.classes)).tolist()
    return {"n": len(data), "classes": data.classes, "class_counts": counts,
            "ids": data.ids, "labels": data.labels.tolist(), "content_sha256": data.content_hash()}
