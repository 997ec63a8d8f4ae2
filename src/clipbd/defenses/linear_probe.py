"""Linear probe: a linear classifier on the frozen image encoder, trained on the few-shot data.

RVPT's baseline: SGD, constant lr 0.01, momentum 0.9, batch 32, 40 epochs. It drops the text
encoder, so a text-key trigger (TrojVQA) cannot be evaluated through it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipbd import accel, features
from clipbd.defenses import register
from clipbd.defenses.base import Defense
from clipbd.models.zeroshot import Classifier


@register("linear_probe")
class LinearProbe(Defense):
    title = "Linear Probe"
    section = "Defense: linear probe"
    order = 2
    text_encoder = False  # a linear head replaces the text side
    frozen_image = True  # a head on the frozen encoder: evaluated from cached image features

    def _head(self, dim: int, n_classes: int) -> torch.nn.Linear:
        return torch.nn.Linear(dim, n_classes)

    def fit(self, ctx, fewshot):
        feats = F.normalize(features.encode(ctx.model, fewshot.images, len(fewshot.images)), dim=-1)
        g = torch.Generator().manual_seed(ctx.seed)
        torch.manual_seed(ctx.seed)
        head = self._head(feats.shape[1], len(ctx.classes))
        opt = torch.optim.SGD(head.parameters(), lr=self.cfg["lr"], momentum=self.cfg["momentum"])
        bs = self.cfg["batch_size"]
        self.losses: list[float] = []
        for _ in tqdm(range(self.cfg["epochs"]), desc="linear probe", mininterval=5):
            for idx in torch.randperm(len(feats), generator=g).split(bs):
                loss = F.cross_entropy(head(feats[idx]), fewshot.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                self.losses.append(loss.item())
        return {f"head.{k}": v for k, v in head.state_dict().items()}

    def classifier(self, ctx, delta, text_prefix=""):
        w = delta["head.weight"]
        head = self._head(w.shape[1], w.shape[0])
        head.load_state_dict({"weight": w, "bias": delta["head.bias"]})
        head.to(accel.device_of(ctx.model))
        return Classifier(ctx.model, torch.nn.Sequential(_Unit(), head)).eval()


class _Unit(torch.nn.Module):
    def forward(self, x):
        return F.normalize(x, dim=-1)
