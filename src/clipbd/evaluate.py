"""Evaluation: a model composed with a defense's delta, on clean and triggered test images."""
from __future__ import annotations

import torch

from clipbd.features import batched


def logits(classifier: torch.nn.Module, images_u8: torch.Tensor, batch: int) -> torch.Tensor:
    classifier.eval()
    return batched(classifier, images_u8, batch)
