"""Supervised tuning of CLIP weights on labelled few-shot images (FT, FST), and the helpers
every weight-tuning defense shares (FT, FST, CleanCLIP).

* A defense tunes a deep copy of the caller's model (`trainable_copy`), never the model
  itself: evaluation builds several classifiers from the same backdoored checkpoint.
* Its delta is the tuned part of the state dict (`state_delta`); `with_weights` rebuilds a
  copy of the checkpoint with a delta loaded.
* `tune`: cross-entropy of a classifier's logits (+ an optional penalty), sample order a
  seeded permutation per epoch, lr cosine over epochs stepped once per epoch (FST's
  CosineAnnealingLR(T_max=epochs) [FST-code]). Optional crop + flip augmentation.
* Resumable: inside `clipbd.train.state.resumable` (the `defend` step), `tune` saves the
  classifier, optimizer, generator and losses at epoch ends and a rerun continues from there.
"""
from __future__ import annotations

import copy
import logging
from typing import Callable

import torch
import torch.nn.functional as F

from clipbd import accel
from clipbd.data.store import ImageSet, to_float
from clipbd.train.augment import crop_flip
from clipbd.train.schedule import set_lr, warmup_cosine
from clipbd.train.state import ambient

log = logging.getLogger(__name__)


def trainable_copy(model: torch.nn.Module, prefixes: tuple[str, ...] = ("",)) -> torch.nn.Module:
    """A deep copy of `model` whose parameters train only if their name starts with a prefix."""
    tuned = copy.deepcopy(model)
    for name, p in tuned.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
    return tuned


def state_delta(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state-dict entries under `prefix`, detached copies (safe to save as safetensors)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
            if k.startswith(prefix)}


def with_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor],
                 prefix: str = "") -> torch.nn.Module:
    """A deep copy of `model` (left untouched) with `weights`, which must cover `prefix`."""
    own = model.state_dict()
    unknown = sorted(k for k in weights if k not in own)
    missing = sorted(k for k in own if k.startswith(prefix) and k not in weights)
    if unknown or missing:
        raise ValueError(f"delta does not fit the model (unknown {unknown[:3]}, "
                         f"missing {missing[:3]})")
    bad = [k for k, v in weights.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"delta shape mismatch for {bad[:3]}")
    tuned = copy.deepcopy(model)
    tuned.load_state_dict(weights, strict=False)
    return tuned.eval()


@torch.enable_grad()  # also when the caller runs under no_grad
def tune(classifier: torch.nn.Module, data: ImageSet, opt: torch.optim.Optimizer, *, lr: float,
         epochs: int, batch_size: int, seed: int, augment: bool = False,
         penalty: Callable[[], torch.Tensor] | None = None,
         after_step: Callable[[], None] | None = None, desc: str = "tune") -> list[float]:
    """Train `classifier` (images in [0,1] -> logits) with CE on `data`; one loss per step.

    `penalty()` is added to every step's loss; `after_step()` runs after every optimizer step
    (FST's norm projection). The trainable parameters are whatever `opt` holds.
    """
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    state = ambient(desc)
    start = state.load(classifier, opt) if state else 0
    if start:
        g.set_state(state.extra["generator"])
        losses = state.extra["losses"].tolist()
    classifier.train()
    dev = accel.device_of(classifier)
    for epoch in range(start, epochs):
        set_lr(opt, lr, warmup_cosine(epoch, epochs, 0))
        for idx in torch.randperm(len(data), generator=g).split(batch_size):
            x = to_float(data.images[idx])
            if augment:
                x = crop_flip(x, g)
            with accel.autocast(dev):
                out = classifier(accel.to(x, dev)).float()
            loss = F.cross_entropy(out, data.labels[idx].to(dev))
            if penalty is not None:
                loss = loss + penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step()
            losses.append(loss.item())
        log.info("%s epoch %d/%d loss %.4f", desc, epoch + 1, epochs, losses[-1])
        if state:
            state.maybe_save(classifier, opt, epoch + 1, extra={
                "generator": g.get_state(), "losses": torch.tensor(losses, dtype=torch.float64)})
    classifier.eval()
    return losses
