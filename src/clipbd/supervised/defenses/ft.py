"""Vanilla fine-tuning of all layers (FST-code `ft`)."""
from clipbd.supervised.defenses import register
from clipbd.supervised.defenses.base import SupDefense


@register("ft")
class FineTune(SupDefense):
    pass
