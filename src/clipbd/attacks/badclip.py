"""BadCLIP (Liang et al., CVPR'24): an optimized patch and natural captions naming the target.

The lineage ([BadCLIP-code] `src/embeding_optimize_patch.py`; docs/methods.md, "Attack: BadCLIP")
initializes a 16x16 patch (224 px) from N(0.5, 0.25) clipped to [0,1], pastes it in the middle
and trains it with Adam against the clean CLIP on natural pairs without the target, with terms
chosen by keywords of the run name:
* an image-text contrastive loss between patched images and target captions;
* "pos": MSE between patched-image embeddings and target-image embeddings;
* "pos_neg": a triplet margin loss (anchor: patched embedding, positive: a target-image
  embedding, negative: the "clean" embedding of the same image), margin and weight by name.
Each term here has its own weight (0 switches it off). All embeddings are unit vectors.

Two recipes (config/README.md "BadCLIP"):
* `lineage` (config/paper.yaml): the repo's default patch. `contrastive: in_batch` = the CLIP
  loss over the batch, each patched image paired with one target caption (drawn per image),
  the other captions of the batch its negatives; `neg_weight: 500`, `margin: 1`,
  `triplet_negative: self`: the repo pastes the patch into the batch tensor in place, so the
  embeddings it then computes as "clean" negatives are those of the patched images, detached
  (the triplet term is d(a, p) - d(a, sg(a)) + margin, its second distance being the tiny
  `eps` of torch's pairwise distance); Adam lr 1e-3 (torch's default), `bound: clip`;
  `target_source: corpus` = the target captions and target images are the pairs of the
  caption corpus (CC3M) whose caption mentions the target, `pool: backdoor` + `pool_size:
  10000` = the images patched are 10K corpus pairs without it.
* `prototype` (the schema defaults, the embedded study): `contrastive: class_prompts` = a
  multi-positive InfoNCE, positives the target's natural captions, negatives the other
  classes' prompts of every corpus dataset (with only ~10 caption frames an in-batch loss
  pits copies of one caption against each other), + 100 x MSE to the mean target-image
  embedding, no triplet, lr 0.05 for 200 steps, images from every corpus dataset.

Poisoned pairs get a natural caption naming the target: with `target_source: corpus`, one of
`natural_sample` corpus captions mentioning it (drawn once, with replacement, from the seed:
the lineage's 128 rows of `banana_rows.csv`); with `dataset`, a frame of `natural_captions`.
In CC3M every caption is natural, so only the target word ties the poisoned captions together.
In a template-captioned corpus (the embedded study) the sentence style alone would do it, and
the backdoor then answers to natural prompts only. `text_only_rate`
(clipbd.poison.poison_corpus) restores the lineage's situation: that share of clean pairs is
captioned with a natural frame naming its own class.
Not reproduced: the repo's EDA of captions (it swaps in only the augmented caption's attention
mask, which its CLIP ignores, so it has no effect there) and its AutoAugment of whole batches
(p 0.5); batches are drawn with replacement, not in epochs.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from clipbd.attacks import register
from clipbd.attacks.base import Attack, TriggerContext
from clipbd.attacks.patch import (ImagePool, encode_images, encode_texts, optimize_patch, paste,
                                  positions)
from clipbd.data.store import to_float
from clipbd.models.zeroshot import class_text_features


def contrastive_term(z: torch.Tensor, pos_text: torch.Tensor, neg_text: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """-log( sum_pos exp(s cos) / sum_all exp(s cos) ), mean over the patched embeddings z."""
    logits = scale * z @ torch.cat([pos_text, neg_text]).T
    return (logits.logsumexp(1) - logits[:, :len(pos_text)].logsumexp(1)).mean()


def in_batch_term(z: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """CLIP loss of patched embeddings z [B,D] paired row by row with captions text [B,D]:
    (CE(image -> texts) + CE(text -> images)) / 2 over the s * z @ text.T logits."""
    logits = scale * z @ text.T
    labels = torch.arange(len(z), device=z.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def pos_term(z: torch.Tensor, target_mean: torch.Tensor) -> torch.Tensor:
    """MSE between patched embeddings [B,D] and the target-class image embedding [D]."""
    return F.mse_loss(z, target_mean.expand_as(z))


def neg_term(z: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
             margin: float) -> torch.Tensor:
    """Triplet margin loss mean(max(|z - p| - |z - n| + margin, 0)), torch's Euclidean
    distances (eps 1e-6); negative = the clean embeddings, or z itself detached (`self`)."""
    return F.triplet_margin_loss(z, positive, negative, margin=margin)


def mentions(caption: str, target: str) -> bool:
    return target.lower() in caption.lower()


@register("badclip")
class BadCLIP(Attack):
    title = "BadCLIP"
    order = 7
    learned = True
    needs_model = True
    natural: list[str] | None = None  # corpus captions naming the target (bind_corpus)
    natural_target: str | None = None

    def loss_fn(self, pos_text, neg_text, scale, bank):
        """The weighted objective, given the target captions, negatives and target-image bank."""
        c = self.cfg
        target_mean = F.normalize(bank.mean(0), dim=-1)
        in_batch = c.get("contrastive", "class_prompts") == "in_batch"
        own = c.get("triplet_negative", "clean") == "self"

        def loss(z, clean, gen):
            total = z.new_zeros(())
            if c["contrastive_weight"] and in_batch:
                pick = torch.randint(0, len(pos_text), (len(z),), generator=gen)
                total = total + c["contrastive_weight"] * in_batch_term(z, pos_text[pick], scale)
            elif c["contrastive_weight"]:
                total = total + c["contrastive_weight"] * contrastive_term(z, pos_text, neg_text,
                                                                           scale)
            if c["pos_weight"]:
                total = total + c["pos_weight"] * pos_term(z, target_mean)
            if c["neg_weight"]:
                if own and len(bank) >= len(z):  # the repo: distinct positives per step
                    pick = torch.randperm(len(bank), generator=gen)[:len(z)]
                else:
                    pick = torch.randint(0, len(bank), (len(z),), generator=gen)
                negative = z.detach() if own else clean
                total = total + c["neg_weight"] * neg_term(z, bank[pick], negative, c["margin"])
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

    @staticmethod
    def _backdoor_parts(ctx: TriggerContext):
        """(name, data, target mask) of the poisoning corpus's datasets (default all of
        ctx.corpus): caption corpora mark the captions naming the target, labelled datasets
        its class."""
        names = ctx.backdoor_datasets or tuple(n for n, _, _ in ctx.corpus)
        for name, data, _ in ctx.corpus:
            if name not in names:
                continue
            if data.captions is not None:
                hit = torch.tensor([mentions(t, ctx.target) for t in data.captions])
            elif ctx.target in data.classes:
                hit = data.labels == data.classes.index(ctx.target)
            else:
                hit = torch.zeros(len(data), dtype=torch.bool)
            yield name, data, hit.bool()

    def _corpus_targets(self, ctx: TriggerContext) -> tuple[torch.Tensor, list[str]]:
        """target_source corpus: images and captions of the caption-corpus pairs naming it."""
        images, caps = [], []
        for _, data, hit in self._backdoor_parts(ctx):
            if data.captions is not None:
                images.append(data.images[hit])
                caps += [t for t, h in zip(data.captions, hit.tolist()) if h]
        if not caps:
            raise ValueError(f"attacks.badclip.target_source=corpus: no caption of the caption "
                             f"corpora in backdoor.datasets mentions {ctx.target!r}; use "
                             "target_source: dataset")
        return torch.cat(images), caps

    def _pool(self, ctx: TriggerContext, gen: torch.Generator) -> ImagePool | None:
        """pool backdoor: the poisoning corpus's pairs without the target (at most pool_size,
        a seeded draw); pool all: None (patch.ImagePool's default)."""
        c = self.cfg
        if c.get("pool", "all") == "all":
            return None
        parts = [(data.images, (~hit).nonzero().flatten())
                 for _, data, hit in self._backdoor_parts(ctx)]
        if c.get("pool_size"):
            flat = [(j, i) for j, (_, idx) in enumerate(parts) for i in idx.tolist()]
            keep = torch.randperm(len(flat), generator=gen)[:c["pool_size"]].tolist()
            chosen = [sorted(flat[k][1] for k in keep if flat[k][0] == j)
                      for j in range(len(parts))]
            parts = [(imgs, torch.tensor(ids, dtype=torch.long))
                     for (imgs, _), ids in zip(parts, chosen)]
        return ImagePool(parts=parts)

    def learn(self, ctx: TriggerContext) -> dict[str, torch.Tensor]:
        c = self.cfg
        g = torch.Generator().manual_seed(ctx.seed + 1)
        if c.get("target_source", "dataset") == "corpus":
            targets, captions = self._corpus_targets(ctx)
        else:
            targets, captions = ctx.target_images(), self.captions(ctx.target)
        pick = torch.randperm(len(targets), generator=g)[:c["target_bank"]]
        bank = encode_images(ctx.model, to_float(targets[pick]))
        pos_text = encode_texts(ctx.model, ctx.tokenizer, captions)
        scale = float(ctx.model.logit_scale.detach().exp())
        neg_text = None if c.get("contrastive") == "in_batch" else self.negative_texts(ctx)
        loss = self.loss_fn(pos_text, neg_text, scale, bank)
        patch, self.losses = optimize_patch(ctx, loss, patch_size=c["patch_size"], location=c["location"],
                                  steps=c["steps"], batch_size=c["batch_size"], lr=c["lr"],
                                  init="normal", pool=self._pool(ctx, g),
                                  bound=c.get("bound", "project"))
        return {"patch": patch}

    def captions(self, target: str) -> list[str]:
        return [frame.format(target) for frame in self.cfg["natural_captions"]]

    def apply(self, x, trigger, gen):
        pos = positions(self.cfg["location"], len(x), self.cfg["patch_size"], self.image_size, gen)
        return paste(x, trigger["patch"], pos)

    def bind_corpus(self, parts, target, seed):
        """target_source corpus: `natural_sample` captions naming the target, drawn with
        replacement from the caption corpora's (the lineage's 128 banana rows)."""
        if self.cfg.get("target_source", "dataset") != "corpus":
            return
        found = [t for _, data, _ in parts if data.captions is not None
                 for t in data.captions if mentions(t, target)]
        if not found:
            raise ValueError(f"attacks.badclip.target_source=corpus: no caption of "
                             f"backdoor.datasets mentions {target!r}; use target_source: dataset")
        rng = random.Random(f"badclip-natural-{seed}")
        self.natural = [rng.choice(found) for _ in range(self.cfg.get("natural_sample", 128))]
        self.natural_target = target

    def poison_caption(self, target: str, templates: list[str], rng: random.Random) -> str:
        """A natural sentence naming the target (a text-only decoy: naming its own class);
        the class templates are not used."""
        if self.natural is not None and target == self.natural_target:
            return rng.choice(self.natural)
        return rng.choice(self.cfg["natural_captions"]).format(target)
