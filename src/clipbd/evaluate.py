"""Evaluation: a model composed with a defense's delta, on clean and triggered test images."""
from __future__ import annotations

import torch

from clipbd.data.store import to_float


@torch.no_grad()
def logits(classifier: torch.nn.Module, images_u8: torch.Tensor, batch: int) -> torch.Tensor:
    classifier.eval()
    out = [classifier(to_float(images_u8[i:i + batch])) for i in range(0, len(images_u8), batch)]
    return torch.cat(out)
