"""Zero-shot classification: class text features from prompt templates."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clipbd import accel


@torch.no_grad()
def class_text_features(model, tok, classes: list[str], templates: list[str],
                        prefix: str = "") -> torch.Tensor:
    """[C, D] unit vectors: per class, the normalized mean of its normalized template embeddings."""
    texts = [prefix + t.format(c) for c in classes for t in templates]
    dev = accel.device_of(model)
    with accel.autocast(dev):  # bf16 with accelerator.amp; float32 features either way
        feats = model.encode_text(tok(texts).to(dev))
    feats = F.normalize(feats.float(), dim=-1)
    feats = feats.view(len(classes), len(templates), -1).mean(1)
    return F.normalize(feats, dim=-1)


class ZeroShotHead(torch.nn.Module):
    """logits = exp(logit_scale) * cos(image, class text)."""

    def __init__(self, text_features: torch.Tensor, logit_scale: torch.Tensor):
        super().__init__()
        self.register_buffer("text_features", text_features)
        self.register_buffer("scale", logit_scale.detach().exp())

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(image_features, dim=-1) @ self.text_features.T


class Normalize(torch.nn.Module):
    """The model's own pixel normalization (open_clip preprocess_cfg), for images in [0,1]."""

    def __init__(self, model):
        super().__init__()
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
        dev = accel.device_of(model)
        self.register_buffer("mean", torch.tensor(mean, device=dev).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, device=dev).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(torch.nn.Module):
    """images in [0,1] -> logits, through the CLIP image encoder and a head."""

    def __init__(self, model, head: torch.nn.Module):
        super().__init__()
        self.model, self.head = model, head
        self.normalize = Normalize(model)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
