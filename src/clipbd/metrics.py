"""Backdoor metrics from logits (docs/methods.md, "Metrics: CA and ASR").

* CA: accuracy on clean test images.
* ASR: share of triggered images whose true class is NOT the target that are classified as
  the target (BackdoorBench convention).
* ASR_all: the same over all triggered images, target class included (BadCLIP repo convention).
* PA: accuracy of triggered images against their true labels.
* Dual-key attacks (TrojVQA) also report each key alone: `asr_image_key` (triggered images,
  plain prompts) and `asr_text_key` (clean images, prompts with the text key).
"""
from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def attack_success(logits: torch.Tensor, labels: torch.Tensor, target: int) -> float:
    """ASR: share of images whose true class is not the target that are classified as it."""
    non_target = labels != target
    if not non_target.any():
        raise ValueError("ASR is undefined: every test image is of the target class")
    return (logits.argmax(1)[non_target] == target).float().mean().item()


def backdoor_metrics(clean_logits: torch.Tensor, labels: torch.Tensor,
                     triggered_logits: torch.Tensor | None, target: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {"ca": accuracy(clean_logits, labels),
                                    "asr": None, "asr_all": None, "pa": None}
    if triggered_logits is not None:
        pred = triggered_logits.argmax(1)
        out["asr"] = attack_success(triggered_logits, labels, target)
        out["asr_all"] = (pred == target).float().mean().item()
        out["pa"] = (pred == labels).float().mean().item()
    return out
