"""RVPT (Repulsive Visual Prompt Tuning): VPT plus a feature-repelling loss.

L = L_CE + alpha * L_FR, with (reconstructed from the paper's prose; see
docs/methods.md, "Defense: RVPT")

    L_FR = (1/N) sum_i max( (1/K) sum_{d in prompted blocks} cos(c_i^d, sigma_i^d), m )

c_i^d: CLS token after block d of the prompted encoder; sigma_i^d: the same for the original
(frozen, possibly backdoored) encoder, computed once for the few-shot set. Minimizing L_FR
pushes the prompted features away from the backdoored ones (toward cos = -1).
`margin: null` (default) applies no clamp; m = 1 removes the repulsion entirely (= VPT),
since cos <= 1. alpha = 0 is VPT as well: the same training loop, bit for bit.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from clipbd.defenses import register
from clipbd.defenses.vpt import VPT


def feature_repulsion(prompted: torch.Tensor | Sequence[torch.Tensor],
                      original: torch.Tensor | Sequence[torch.Tensor],
                      margin: float | None = None) -> torch.Tensor:
    """L_FR over CLS tokens [K, N, W] (or K tensors [N, W]) at K layers: the mean over samples
    of max(mean over layers of cos(prompted, original), margin)."""
    if not torch.is_tensor(prompted):
        prompted = torch.stack(list(prompted))
    if not torch.is_tensor(original):
        original = torch.stack(list(original))
    if prompted.shape != original.shape or prompted.ndim != 3:
        raise ValueError(f"expected two [layers, samples, width] tensors, got "
                         f"{tuple(prompted.shape)} and {tuple(original.shape)}")
    per_sample = F.cosine_similarity(prompted, original, dim=-1).mean(0)
    if margin is not None:
        per_sample = per_sample.clamp(min=margin)
    return per_sample.mean()


@register("rvpt")
class RVPT(VPT):
    title = "RVPT"
    order = 3

    def repels(self) -> bool:
        return self.cfg["alpha"] != 0

    def penalty(self, prompted, original):
        return self.cfg["alpha"] * feature_repulsion(prompted, original, self.cfg["margin"])
