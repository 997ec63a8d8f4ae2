"""Victim classifiers: torchvision ResNet-18 built from scratch (weights=None).

Two stems: `imagenet` (torchvision's 7x7/2 conv + max-pool, as BackdoorBench's `resnet18`
uses on 32 px images) and `cifar` (3x3/1 conv, no max-pool: the usual small-image variant,
16x the compute at 32 px). The head is `fc` (FST's linear layer W).
"""
from __future__ import annotations

import torch
from torch import nn

from clipbd.artifacts import load_tensors, save_tensors

HEAD = "fc."
ARCHS = ("resnet18",)


def build(arch: str, n_classes: int, stem: str = "imagenet") -> nn.Module:
    from clipbd._compat import import_torchvision

    if arch not in ARCHS:
        raise ValueError(f"unknown victim architecture {arch!r}; known: {', '.join(ARCHS)}")
    model = import_torchvision().models.resnet18(weights=None, num_classes=n_classes)
    if stem == "cifar":
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif stem != "imagenet":
        raise ValueError(f"unknown stem {stem!r}; use imagenet or cifar")
    return model


def save(path, model: nn.Module, arch: str, stem: str, n_classes: int, **meta) -> None:
    save_tensors(path, model.state_dict(),
                 {"arch": arch, "stem": stem, "n_classes": n_classes, **meta})


def load(path) -> tuple[nn.Module, dict]:
    tensors, meta = load_tensors(path)
    model = build(meta["arch"], meta["n_classes"], meta["stem"])
    model.load_state_dict(tensors)
    return model.eval(), meta


def with_delta(model: nn.Module, delta: dict[str, torch.Tensor]) -> nn.Module:
    """`model` with the delta's entries loaded (a defense stores only what it changed)."""
    own = model.state_dict()
    unknown = sorted(set(delta) - set(own))
    if unknown:
        raise ValueError(f"delta does not fit the victim (unknown {unknown[:3]})")
    model.load_state_dict({**own, **delta})
    return model.eval()
