"""One tuning recipe, five switches: FST-code `fine_tune/ft.py`.

Method notes: docs/methods.md, "Supervised track: defenses".

    mode        re-init head   trains                     penalty
    ft          no             all parameters             -
    lp          no             head (features frozen,     -
                               batch-norm statistics too)
    fe_tuning   yes            features (head frozen)     -
    ft_init     yes            all parameters             -
    fst         yes            all parameters             alpha * <W, W_ori>_F

SGD (momentum, weight decay 0 by default), lr cosine over epochs, CE; the head's weight is
rescaled to ||W_ori||_F after every step when `project_norm` (FST-code does so in every mode,
so it is on by default; it has no effect where the head is frozen). The penalty and the
projection are the CLIP track's (clipbd.defenses.fst); the loop is clipbd.train.supervised.tune.
The delta is what the mode changes: the head for lp, the whole state dict otherwise.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from clipbd.data.store import ImageSet
from clipbd.defenses.fst import project_norm, shift_penalty
from clipbd.supervised.model import HEAD
from clipbd.train.optim import make_optimizer
from clipbd.train.supervised import tune


class FrozenFeatures(nn.Module):
    """Keeps the wrapped model in eval mode while training (frozen batch-norm statistics)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x):
        return self.model(x)


def reset_head(head: nn.Linear, g: torch.Generator) -> None:
    """Uniform in ±1/sqrt(fan_in), weight and bias (torch's Linear init, as FST)."""
    bound = 1.0 / math.sqrt(head.weight.shape[1])
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.uniform_(-bound, bound, generator=g)


class SupDefense:
    name = ""
    trains = True
    reinit_head = False
    train_head = True
    train_features = True
    uses_alpha = False

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def trainable(self, param_name: str) -> bool:
        return self.train_head if param_name.startswith(HEAD) else self.train_features

    def fit(self, victim: nn.Module, data: ImageSet, seed: int) -> dict[str, torch.Tensor]:
        """Tune a copy of `victim` on the clean tuning set; return the changed state entries."""
        c = self.cfg
        model = copy.deepcopy(victim)
        head = model.fc
        w_ori = head.weight.detach().clone()
        norm = w_ori.norm()
        if self.reinit_head:
            reset_head(head, torch.Generator().manual_seed(seed))
        for n, p in model.named_parameters():
            p.requires_grad_(self.trainable(n))
        clf = model if self.train_features else FrozenFeatures(model)
        opt = make_optimizer(model.named_parameters(), "sgd", c["lr"], c["weight_decay"],
                             c["momentum"])
        alpha = c.get("alpha", 0.0) if self.uses_alpha else 0.0
        penalty = (lambda: shift_penalty(head.weight, w_ori, alpha)) if alpha else None
        project = None
        if c["project_norm"] and self.train_head:
            def project():
                head.weight.copy_(project_norm(head.weight, norm))
        torch.manual_seed(seed)
        self.losses = tune(clf, data, opt, lr=c["lr"], epochs=c["epochs"],
                           batch_size=c["batch_size"], seed=seed, augment=c["augment"],
                           penalty=penalty, after_step=project, desc=self.name)
        prefix = "" if self.train_features else HEAD
        return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
                if k.startswith(prefix)}
