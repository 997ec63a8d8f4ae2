"""Fine-tuning (FT): the whole image encoder tuned on the few-shot data, CE on zero-shot logits.

The head is the frozen zero-shot classifier (scale * cos(image, hand-crafted class text)), so
the text encoder is untouched and a text-key trigger (TrojVQA) still reaches the tuned model
through `text_prefix`. The delta holds only the `visual.*` weights.

Defaults (RVPT's App. A full-FT baseline gives no hyperparameters): AdamW, lr 1e-5,
weight decay 0.1, batch 32, 10 epochs, cosine over epochs: the usual recipe for tuning a
pre-trained CLIP end to end. `optimizer: sgd` with lr 0.01, momentum 0.9, weight decay 0 is
FST's `ft` mode [FST-code] (without its norm-projection quirk, docs/methods.md, "Defense: FST").
"""
from __future__ import annotations

from clipbd.defenses import register
from clipbd.defenses.base import Defense
from clipbd.models.zeroshot import Classifier
from clipbd.train.optim import make_optimizer
from clipbd.train.supervised import state_delta, trainable_copy, tune, with_weights

VISUAL = "visual."


@register("ft")
class FineTune(Defense):
    title = "FT"
    order = 7
    transfers = True  # the delta does not depend on the classes

    def fit(self, ctx, fewshot):
        c = self.cfg
        model = trainable_copy(ctx.model, (VISUAL,))
        clf = Classifier(model, ctx.zero_shot_head())
        opt = make_optimizer(model.named_parameters(), c["optimizer"], c["lr"],
                             c["weight_decay"], c["momentum"])
        self.losses = tune(clf, fewshot, opt, lr=c["lr"], epochs=c["epochs"], batch_size=c["batch_size"],
             seed=ctx.seed, augment=c["augment"], desc="ft")
        return state_delta(model, VISUAL)

    def classifier(self, ctx, delta, text_prefix=""):
        model = with_weights(ctx.model, delta, VISUAL)
        return Classifier(model, ctx.zero_shot_head(text_prefix)).eval()
