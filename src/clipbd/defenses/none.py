"""No defense: the model as it is, classified zero-shot from the class prompts."""
from clipbd.defenses import register
from clipbd.defenses.base import Defense
from clipbd.models.zeroshot import Classifier


@register("none")
class NoDefense(Defense):
    title = "No defense"
    section = "Defense: none"
    order = 0
    probe = True
    trains = False
    frozen_image = True

    def fit(self, ctx, fewshot):
        return {}

    def classifier(self, ctx, delta, text_prefix=""):
        return Classifier(ctx.model, ctx.zero_shot_head(text_prefix)).eval()
