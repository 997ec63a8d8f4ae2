"""CleanCLIP: fine-tune all of CLIP on clean image-caption pairs [CleanCLIP-code].

Method notes: docs/methods.md, "Defense: CleanCLIP".

loss = clip_weight * L_CLIP(image, caption)
       + inmodal_weight * (L_in(image, augmented image) + L_in(caption, augmented caption)) / 2

L_CLIP is the symmetric InfoNCE of pre-training (`clip_loss`); L_in is the in-modal
self-supervised InfoNCE, CE of each original against the batch's augmented views (one
direction, as in the reference), at the model's logit scale. Both weights default to 1.
AdamW (wd 0.1, none on gains/biases/logit scale), linear warm-up then cosine per step, batch
64, 10 epochs; logit scale clamped at 100 as in pre-training.

Differences to the reference, by necessity (documented in config/README.md):
* the clean pairs are `n_pairs` images of the dataset's own training split (`ctx.train`,
  else the few-shot set), drawn with a seeded permutation (all of them if fewer), each
  captioned with a random template naming its class: no CC3M here;
* images are augmented on the fly with crop + flip + colour jitter (not AutoAugment);
  captions with EDA-lite (deletion or swap, no WordNet), drawn once per pair as the
  reference computes EDA once at load.

The delta is the full state dict (everything is tuned); the classifier's class prompts are
encoded by the tuned text encoder.
"""
from __future__ import annotations

import dataclasses
import logging
import random

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipbd.data.captions import random_caption
from clipbd import accel
from clipbd.data.store import ImageSet, to_float
from clipbd.defenses import register
from clipbd.defenses.base import Defense
from clipbd.models.zeroshot import Classifier, Normalize
from clipbd.train.augment import augment, eda_lite
from clipbd.train.contrastive import clip_loss
from clipbd.train.schedule import set_lr, warmup_cosine
from clipbd.train.state import ambient
from clipbd.train.optim import make_optimizer
from clipbd.train.supervised import state_delta, trainable_copy, with_weights

log = logging.getLogger(__name__)


def inmodal_loss(features: torch.Tensor, augmented: torch.Tensor, scale) -> torch.Tensor:
    """CE of scale * cos(original_i, augmented_j) against j = i (originals as queries)."""
    logits = scale * F.normalize(features, dim=-1) @ F.normalize(augmented, dim=-1).T
    return F.cross_entropy(logits, torch.arange(len(logits)))


def cleanclip_loss(image, image_aug, text, text_aug, scale, clip_weight: float = 1.0,
                   inmodal_weight: float = 1.0) -> torch.Tensor:
    inmodal = 0.5 * (inmodal_loss(image, image_aug, scale) + inmodal_loss(text, text_aug, scale))
    return clip_weight * clip_loss(image, text, scale) + inmodal_weight * inmodal


@dataclasses.dataclass
class CleanPairs:
    images: torch.Tensor  # uint8 [M,H,W,3]: the source split, shared (not copied)
    index: torch.Tensor  # long [N]: the drawn images
    captions: list[str]
    augmented: list[str]  # EDA-lite of each caption

    def __len__(self) -> int:
        return len(self.index)


def clean_pairs(ctx, fewshot: ImageSet, n_pairs: int) -> CleanPairs:
    """`n_pairs` seeded images of ctx.train (else the few-shot set), captioned from templates."""
    source = ctx.train if ctx.train is not None else fewshot
    g = torch.Generator().manual_seed(ctx.seed)
    idx = torch.randperm(len(source), generator=g)[:n_pairs]
    rng = random.Random(ctx.seed)
    if source.captions is not None:  # a caption corpus (CC3M CSV): its own captions
        captions = [source.captions[i] for i in idx.tolist()]
    else:
        captions = [random_caption(ctx.classes[c], ctx.templates, rng)
                    for c in source.labels[idx].tolist()]
    return CleanPairs(source.images, idx, captions, [eda_lite(t, rng) for t in captions])


def batch_index(n: int, step: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of step's batch: a seeded permutation per epoch, the last partial batch dropped."""
    epoch, pos = divmod(step, max(1, n // batch_size))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)[pos * batch_size:(pos + 1) * batch_size]


@register("cleanclip")
class CleanCLIP(Defense):
    title = "CleanCLIP"
    order = 1
    transfers = True  # the delta does not depend on the classes

    def steps(self, n: int) -> tuple[int, int]:
        """(steps, batch size) for `n` pairs: `steps` if set, else `epochs` full passes."""
        bs = min(self.cfg["batch_size"], n)
        return self.cfg["steps"] or self.cfg["epochs"] * max(1, n // bs), bs

    @torch.enable_grad()  # also when the caller runs under no_grad
    def fit(self, ctx, fewshot):
        c = self.cfg
        pairs = clean_pairs(ctx, fewshot, c["n_pairs"])
        tokens, tokens_aug = ctx.tokenizer(pairs.captions), ctx.tokenizer(pairs.augmented)
        steps, bs = self.steps(len(pairs))
        model = trainable_copy(ctx.model)
        normalize = Normalize(model)
        opt = make_optimizer(model.named_parameters(), "adamw", c["lr"], c["weight_decay"])
        g = torch.Generator()
        state = ambient("cleanclip")  # resumable: batches and augmentations are f(seed, step)
        start = state.load(model, opt) if state else 0
        saved = state.extra.get("losses") if start else None  # states of older code: no curve
        self.losses: list[float] = saved.tolist() if saved is not None else []
        model.train()
        dev = accel.device_of(model)
        bar = tqdm(range(start, steps), desc="cleanclip", mininterval=5, initial=start, total=steps)
        for step in bar:
            set_lr(opt, c["lr"], warmup_cosine(step, steps, c["warmup"]))
            idx = batch_index(len(pairs), step, bs, ctx.seed)
            x = to_float(pairs.images[pairs.index[idx]])
            g.manual_seed(ctx.seed * 1_000_003 + 7919 * step + 2)
            images = normalize(accel.to(torch.cat([x, augment(x, g)]), dev))
            with accel.autocast(dev):
                img, txt, scale = model(images, accel.to(torch.cat([tokens[idx], tokens_aug[idx]]),
                                                         dev))[:3]
            (img, img_aug), (txt, txt_aug) = img.float().chunk(2), txt.float().chunk(2)
            loss = cleanclip_loss(img, img_aug, txt, txt_aug, scale.float(),
                                  c["clip_weight"], c["inmodal_weight"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)  # CLIP's cap: scale <= 100
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
                log.info("cleanclip step %d/%d loss %.4f", step, steps, loss.item())
            self.losses.append(loss.item())
            if state:
                state.maybe_save(model, opt, step + 1, extra=lambda: {
                    "losses": torch.tensor(self.losses, dtype=torch.float64)})
        return state_delta(model)

    def classifier(self, ctx, delta, text_prefix=""):
        tuned = dataclasses.replace(ctx, model=with_weights(ctx.model, delta))
        return Classifier(tuned.model, tuned.zero_shot_head(text_prefix)).eval()
