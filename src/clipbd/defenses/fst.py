"""Feature Shift Tuning (FST) on CLIP [FST-code `fine_tune/ft.py`].

Method notes: docs/methods.md, "Defense: FST" (FST on CLIP is decision 6 there).

FST tunes the feature extractor together with a re-initialized linear head W, pushing W away
from the compromised head W_ori: loss = CE + alpha * sum(W * W_ori), and after every
optimizer step W is rescaled to ||W_ori||_F. On CLIP:

* W_ori = the zero-shot classifier's weights: the unit class text features [C, D].
* The head has the zero-shot classifier's form, logits = s * normalize(f) @ W.T + b with s
  the model's (frozen) logit scale, so (W_ori, b = 0) *is* the zero-shot classifier and the
  penalty and the norm act on the same scale as FST's. A plain linear head on normalized
  features would cap logits at ~±1 under ||W|| = ||W_ori|| and could not fit the data.
* W and b are re-initialized uniform in ±1/sqrt(D) (torch's Linear init, as FST does); the
  bias is neither penalized nor rescaled. W is first rescaled after the first step.
* SGD, momentum 0.9, no weight decay, cosine over epochs; alpha 0.2, lr 0.01, 10 epochs.
* Trainable: the image encoder and the head. The text encoder is dropped, so a text-key
  trigger cannot reach the purified model: `classifier` ignores `text_prefix`.

Delta: the `visual.*` weights plus `head.weight` and `head.bias`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clipbd.defenses import register
from clipbd.defenses.base import Defense
from clipbd.models.zeroshot import Classifier
from clipbd.train.optim import make_optimizer
from clipbd.train.supervised import state_delta, trainable_copy, tune, with_weights

VISUAL = "visual."


def shift_penalty(w: torch.Tensor, w_ori: torch.Tensor, alpha: float) -> torch.Tensor:
    """FST's feature-shift term alpha * <W, W_ori>_F (lower when W points away from W_ori)."""
    return alpha * (w * w_ori).sum()


def project_norm(w: torch.Tensor, norm: float | torch.Tensor) -> torch.Tensor:
    """W rescaled to Frobenius norm `norm` (its direction kept)."""
    return w * (norm / w.norm())


class CosineHead(torch.nn.Module):
    """logits = scale * normalize(features) @ W.T + b."""

    def __init__(self, dim: int, n_classes: int, scale: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(n_classes, dim))
        self.bias = torch.nn.Parameter(torch.empty(n_classes))
        self.register_buffer("scale", scale.detach().clone(), persistent=False)

    def reset(self, g: torch.Generator) -> "CosineHead":
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=g)
            self.bias.uniform_(-bound, bound, generator=g)
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=-1) @ self.weight.T + self.bias


@register("fst")
class FeatureShiftTuning(Defense):
    title = "FST"
    order = 8
    text_encoder = False  # a linear head on the tuned features replaces the text side

    def fit(self, ctx, fewshot):
        c = self.cfg
        zs = ctx.zero_shot_head()
        w_ori = zs.text_features.clone()
        norm = w_ori.norm()
        g = torch.Generator().manual_seed(ctx.seed)
        head = CosineHead(w_ori.shape[1], w_ori.shape[0], zs.scale).reset(g)
        model = trainable_copy(ctx.model, (VISUAL,))
        named = [*model.named_parameters(), *(("head." + n, p) for n, p in head.named_parameters())]
        opt = make_optimizer(named, "sgd", c["lr"], 0.0, c["momentum"])
        self.losses = tune(Classifier(model, head), fewshot, opt, lr=c["lr"], epochs=c["epochs"],
             batch_size=c["batch_size"], seed=ctx.seed, augment=c["augment"],
             penalty=lambda: shift_penalty(head.weight, w_ori, c["alpha"]),
             after_step=lambda: head.weight.copy_(project_norm(head.weight, norm)), desc="fst")
        return {**state_delta(model, VISUAL),
                **{f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()}}

    def classifier(self, ctx, delta, text_prefix=""):
        """The tuned image encoder + FST's head; `text_prefix` is ignored (no text encoder)."""
        visual = {k: v for k, v in delta.items() if k.startswith(VISUAL)}
        model = with_weights(ctx.model, visual, VISUAL)
        w = delta["head.weight"]
        head = CosineHead(w.shape[1], w.shape[0], ctx.model.logit_scale.exp())
        head.load_state_dict({"weight": w, "bias": delta["head.bias"]})
        return Classifier(model, head).eval()
