"""FT-init: re-init the head and tune everything (FST-code `ft-init`)."""
from clipbd.supervised.defenses import register
from clipbd.supervised.defenses.base import SupDefense


@register("ft_init")
class FTInit(SupDefense):
    reinit_head = True
