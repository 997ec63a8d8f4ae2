"""CLIP's symmetric InfoNCE training loop, shared by pre-training and backdoor injection.

Batches are a pure function of (seed, step): sample order is a seeded permutation per epoch
and caption choice a seeded draw per step, so a resumed run sees the same batches.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipbd import accel
from clipbd.data.captions import CaptionedImages
from clipbd.data.store import to_float
from clipbd.models.zeroshot import Normalize
from clipbd.train.optim import make_optimizer
from clipbd.train.schedule import set_lr, warmup_cosine
from clipbd.train.state import TrainState

log = logging.getLogger(__name__)


def clip_loss(image_features, text_features, scale) -> torch.Tensor:
    """Symmetric InfoNCE; `scale` is the temperature's inverse (open_clip returns it exp'ed)."""
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    logits = scale * img @ txt.T
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _batch(data: CaptionedImages, step: int, batch_size: int, seed: int):
    n = len(data.images)
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    idx = torch.randperm(n, generator=g)[pos * batch_size:(pos + 1) * batch_size]
    g.manual_seed(seed * 1_000_003 + 7919 * step + 1)
    pick = torch.randint(0, data.caption_ids.shape[1], (len(idx),), generator=g)
    return to_float(data.images[idx]), data.bank[data.caption_ids[idx, pick]]


def train(model, data: CaptionedImages, *, steps: int, batch_size: int, lr: float,
          weight_decay: float, warmup: int, seed: int, state: TrainState | None = None,
          desc: str = "train") -> list[float]:
    """Train all parameters of `model` in place; returns the loss curve (one value per step).

    The curve is part of the saved state, so a run resumed from any step (the last one
    included: killed after its final save, before the model was written) returns the whole
    curve, as an uninterrupted run does.
    """
    normalize = Normalize(model)
    dev = accel.device_of(model)
    forward = accel.compiled(model)
    opt = make_optimizer(model.named_parameters(), "adamw", lr, weight_decay)
    start = state.load(model, opt) if state else 0
    saved = state.extra.get("losses") if start else None  # older states lack the curve
    losses: list[float] = saved.tolist() if saved is not None else []
    model.train()
    bar = tqdm(range(start, steps), desc=desc, mininterval=5, initial=start, total=steps)
    for step in bar:
        set_lr(opt, lr, warmup_cosine(step, steps, warmup))
        images, tokens = _batch(data, step, batch_size, seed)
        with accel.autocast(dev):
            image_f, text_f, scale = forward(normalize(accel.to(images, dev)), accel.to(tokens, dev))[:3]
            loss = clip_loss(image_f.float(), text_f.float(), scale.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # CLIP's cap: scale <= 100
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            log.info("%s step %d/%d loss %.4f", desc, step, steps, loss.item())
        if state:
            state.maybe_save(model, opt, step + 1,  # the curve is only built when saved
                             extra=lambda: {"losses": torch.tensor(losses, dtype=torch.float64)})
    model.eval()
    return losses
