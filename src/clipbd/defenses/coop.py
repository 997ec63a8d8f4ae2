"""CoOp: learnable text context tuned on the few-shot data; the encoders stay frozen.

[CoOp-code] recipe: SGD lr 0.002 with momentum 0.9 and weight decay 5e-4, batch 32, cosine
decay, one constant warm-up epoch at 1e-5; context "a photo of a" or N(0, 0.02); class token at
the end; shared or class-specific (CSC) context. Unlike CoOp there is no image augmentation:
the images never change, so their features are computed once and every epoch reuses them.
The delta is the context alone: {"ctx": [n_ctx, W]} or, class-specific, [C, n_ctx, W].
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipbd import accel
from clipbd.data.store import to_float
from clipbd.defenses import register
from clipbd.defenses.base import Defense
from clipbd.models.text_prompt import TextPrompt, frozen
from clipbd.models.zeroshot import Classifier, ZeroShotHead
from clipbd.train.schedule import set_lr, warmup_cosine

log = logging.getLogger(__name__)
FEATURE_BATCH = 256


@torch.no_grad()
def image_features(model, images: torch.Tensor, transform: Callable | None = None,
                   batch: int = FEATURE_BATCH) -> torch.Tensor:
    """Unit features [N, D] of uint8 images [N,H,W,3], in batches on the model's device;
    `transform` maps each float batch [B,3,H,W] in [0,1] first (e.g. adds a trigger)."""
    clf = Classifier(model, torch.nn.Identity()).eval()
    dev = accel.device_of(model)
    out = []
    for i in range(0, len(images), batch):
        x = to_float(images[i:i + batch]).to(dev)
        with accel.autocast(dev):  # bf16 with accelerator.amp; float32 features either way
            feats = clf.features(transform(x) if transform else x)
        out.append(F.normalize(feats.float(), dim=-1))
    return torch.cat(out)


def zero_shot_logits(image_feats: torch.Tensor, text_feats: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """exp(logit_scale) * cos, for unit features."""
    return logit_scale.detach().exp() * image_feats @ text_feats.T


def tune(prompt: TextPrompt, n: int, batch_loss: Callable[[torch.Tensor], torch.Tensor],
         cfg: dict, gen: torch.Generator) -> list[float]:
    """SGD on the context over `epochs` shuffled passes of n samples; per-step losses."""
    opt = torch.optim.SGD([prompt.ctx], lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    bs = cfg["batch_size"]
    total = cfg["epochs"] * math.ceil(n / bs)
    warm = cfg["warmup_epochs"] * math.ceil(n / bs)
    losses: list[float] = []
    for _ in tqdm(range(cfg["epochs"]), desc="prompt epochs", mininterval=5):
        for idx in torch.randperm(n, generator=gen).split(bs):
            step = len(losses)
            if step < warm:
                set_lr(opt, cfg["warmup_lr"], 1.0)
            else:
                set_lr(opt, cfg["lr"], warmup_cosine(step, total, 0))
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


@register("coop")
class CoOp(Defense):
    title = "CoOp"
    order = 5
    text_context = "n_ctx"
    frozen_image = True  # text side only: evaluated from cached image features

    def prompt(self, ctx, generator=None, context=None) -> TextPrompt:
        if context is not None:
            return TextPrompt(ctx.model, ctx.tokenizer, ctx.classes, context.shape[-2],
                              context.ndim == 3, ctx=context)
        return TextPrompt(ctx.model, ctx.tokenizer, ctx.classes, self.cfg["n_ctx"],
                          self.cfg["class_specific"], self.cfg["init"], generator)

    def fit(self, ctx, fewshot):
        gen = torch.Generator().manual_seed(ctx.seed)
        with frozen(ctx.model) as model:
            feats = image_features(model, fewshot.images)
            labels = fewshot.labels.to(feats.device)
            prompt = self.prompt(ctx, gen)

            def batch_loss(idx):
                return F.cross_entropy(zero_shot_logits(feats[idx], prompt(), model.logit_scale),
                                       labels[idx])

            self.losses = tune(prompt, len(feats), batch_loss, self.cfg, gen)
        log.info("coop: loss %.4f -> %.4f", self.losses[0], self.losses[-1])
        return {"ctx": prompt.ctx.detach().cpu().clone()}

    def classifier(self, ctx, delta, text_prefix=""):
        prompt = self.prompt(ctx, context=delta["ctx"])
        with torch.no_grad():
            feats = prompt(text_prefix)
        return Classifier(ctx.model, ZeroShotHead(feats, ctx.model.logit_scale)).eval()
