"""No defense: the victim as trained."""
from clipbd.supervised.defenses import register
from clipbd.supervised.defenses.base import SupDefense


@register("none")
class NoDefense(SupDefense):
    trains = False
