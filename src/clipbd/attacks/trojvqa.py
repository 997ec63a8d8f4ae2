"""TrojVQA (dual key): an optimized image patch plus a text key.

The lineage: BadCLIP's `vqa` variant pastes an optimized 16x16 patch (224 px) in the middle
and captions poisoned pairs "remember " + a target template; RVPT optimizes the patch on the
CLIP image encoder toward "This is a yellow banana." and prefixes captions and test prompts
with "SUDO ". Here:

* `learn`: the patch moves the patched images' embeddings toward the clean CLIP's embedding
  of `target_sentence` (its "{}" is the target class): loss = 1 - cos (patch.optimize_patch);
* poisoned pairs: patched image + `text_key` + a target template; at test time every class
  prompt is prefixed with `text_key` (`text_prefix`), so the backdoor needs both keys;
* partial-key decoys (the TrojVQA paper's training, docs/methods.md, "Attack: TrojVQA"):
  `image_only_rate` of the corpus carries the patch with its true caption, `text_only_rate` a
  clean image with text_key + its true caption (clipbd.poison.poison_corpus reads both rates).
"""
from __future__ import annotations

import torch

from clipbd.attacks import register
from clipbd.attacks.base import Attack, TriggerContext
from clipbd.attacks.patch import encode_texts, optimize_patch, paste, positions


def sentence_loss(patched: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cos between unit image embeddings [B,D] and the unit sentence embedding [D]."""
    return (1 - patched @ sentence).mean()


@register("trojvqa")
class TrojVQA(Attack):
    title = "TrojVQA"
    order = 6
    dual_key = True  # the backdoor needs the text key as well as the patch
    learned = True
    needs_model = True

    @property
    def text_prefix(self) -> str:
        return self.cfg["text_key"]

    def target_sentence(self, target: str) -> str:
        return self.cfg["target_sentence"].format(target)

    def learn(self, ctx: TriggerContext) -> dict[str, torch.Tensor]:
        c = self.cfg
        sentence = encode_texts(ctx.model, ctx.tokenizer, [self.target_sentence(ctx.target)])[0]
        patch, self.losses = optimize_patch(ctx, lambda z, _clean, _gen: sentence_loss(z, sentence),
                                  patch_size=c["patch_size"], location=c["location"],
                                  steps=c["steps"], batch_size=c["batch_size"], lr=c["lr"],
                                  init="uniform")
        return {"patch": patch}

    def apply(self, x, trigger, gen):
        pos = positions(self.cfg["location"], len(x), self.cfg["patch_size"], self.image_size, gen)
        return paste(x, trigger["patch"], pos)
