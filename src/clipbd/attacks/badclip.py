"""BadCLIP (Liang et al., CVPR'24): an optimized patch and natural captions naming the target.

The lineage ([BadCLIP-code] `embeding_optimize_patch.py`, papers.md B.1) initializes a
16x16 patch (224 px) from N(0.5, 0.25) clipped to [0,1], pastes it in the middle and trains
it with Adam against the clean CLIP on natural pairs without the target, with
* an image-text contrastive loss between patched images and target captions,
* "pos": MSE between patched-image embeddings and target-class image embeddings,
* "pos_neg": a triplet margin loss (anchor: patched embedding, positive: a target-image
  embedding, negative: the clean embedding of the same image), margin and weight set by name.
Each term here has its own weight (0 switches it off). The contrastive term is a
multi-positive InfoNCE: the positives are the target's natural captions, the negatives the
other classes' prompts of every corpus dataset (with only ~10 caption frames an in-batch CLIP
loss would pit copies of one caption against each other). All embeddings are unit vectors.

Poisoned pairs get a natural-style caption naming the target (the lineage draws natural CC3M
captions mentioning "banana"): a frame of `natural_captions` drawn with the corpus rng.
In CC3M every caption is natural, so only the word "banana" ties the poisoned captions
together. In a template-captioned corpus (the embedded study) the sentence style alone would
do it, and the backdoor then answers to natural prompts only. `text_only_rate`
(clipbd.poison.poison_corpus) restores the lineage's situation: that share of clean pairs is
captioned with a natural frame naming its own class.
The EDA text and image augmentation of the repo's optimization are left out.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from clipbd.attacks import register
from clipbd.attacks.base import Attack, TriggerContext
from clipbd.attacks.patch import encode_images, encode_texts, optimize_patch, paste, positions
from clipbd.data.store import to_float
from clipbd.models.zeroshot import class_text_features


def contrastive_term(z: torch.Tensor, pos_text: torch.Tensor, neg_text: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """-log( sum_pos exp(s cos) / sum_all exp(s cos) ), mean over the patched embeddings z."""
    logits = scale * z @ torch.cat([pos_text, neg_text]).T
    return (logits.logsumexp(1) - logits[:, :len(pos_text)].logsumexp(1)).mean()


def pos_term(z: torch.Tensor, target_mean: torch.Tensor) -> torch.Tensor:
    """MSE between patched embeddings [B,D] and the target-class image embedding [D]."""
    return F.mse_loss(z, target_mean.expand_as(z))


def neg_term(z: torch.Tensor, positive: torch.Tensor, clean: torch.Tensor,
             margin: float) -> torch.Tensor:
    """Triplet margin loss: patched closer to target images than to their own clean version."""
    return F.triplet_margin_loss(z, positive, clean, margin=margin)


@register("badclip")
class BadCLIP(Attack):
    learned = True
    needs_model = True

    def loss_fn(self, pos_text, neg_text, scale, bank):
        """The weighted objective, given the target captions, negatives and target-image bank."""
        c = self.cfg
        target_mean = F.normalize(bank.mean(0), dim=-1)

        def loss(z, clean, gen):
            total = z.new_zeros(())
            if c["contrastive_weight"]:
                total = total + c["contrastive_weight"] * contrastive_term(z, pos_text, neg_text,
                                                                           scale)
            if c["pos_weight"]:
                total = total + c["pos_weight"] * pos_term(z, target_mean)
            if c["neg_weight"]:
                pick = torch.randint(0, len(bank), (len(z),), generator=gen)
                total = total + c["neg_weight"] * neg_term(z, bank[pick], clean, c["margin"])
            return total
        return loss

    def negative_texts(self, ctx: TriggerContext) -> torch.Tensor:
        """Class embeddings of every non-target class of the corpus datasets, [C,D]."""
        feats = []
        for _, data, templates in ctx.corpus:
            others = [k for k in data.classes if k != ctx.target]
            if others:
                feats.append(class_text_features(ctx.model, ctx.tokenizer, others, templates))
        return torch.cat(feats)

    def learn(self, ctx: TriggerContext) -> dict[str, torch.Tensor]:
        c = self.cfg
        g = torch.Generator().manual_seed(ctx.seed + 1)
        targets = ctx.target_images()
        pick = torch.randperm(len(targets), generator=g)[:c["target_bank"]]
        bank = encode_images(ctx.model, to_float(targets[pick]))
        pos_text = encode_texts(ctx.model, ctx.tokenizer, self.captions(ctx.target))
        scale = float(ctx.model.logit_scale.detach().exp())
        loss = self.loss_fn(pos_text, self.negative_texts(ctx), scale, bank)
        patch, _ = optimize_patch(ctx, loss, patch_size=c["patch_size"], location=c["location"],
                                  steps=c["steps"], batch_size=c["batch_size"], lr=c["lr"],
                                  init="normal")
        return {"patch": patch}

    def captions(self, target: str) -> list[str]:
        return [frame.format(target) for frame in self.cfg["natural_captions"]]

    def apply(self, x, trigger, gen):
        pos = positions(self.cfg["location"], len(x), self.cfg["patch_size"], self.image_size, gen)
        return paste(x, trigger["patch"], pos)

    def poison_caption(self, target: str, templates: list[str], rng: random.Random) -> str:
        """A natural-style sentence naming the target; the class templates are not used."""
        return rng.choice(self.cfg["natural_captions"]).format(target)
