"""Linear probing: only the head trains, no re-init (FST-code `lp`)."""
from clipbd.supervised.defenses import register
from clipbd.supervised.defenses.base import SupDefense


@register("lp")
class LinearProbe(SupDefense):
    train_features = False
