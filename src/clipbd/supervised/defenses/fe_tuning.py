"""FE-tuning: re-init the head, freeze it, tune the feature extractor (FST-code `fe-tuning`)."""
from clipbd.supervised.defenses import register
from clipbd.supervised.defenses.base import SupDefense


@register("fe_tuning")
class FETuning(SupDefense):
    reinit_head = True
    train_head = False
