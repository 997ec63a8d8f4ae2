"""FST: re-init the head, tune everything, penalize alpha * <W, W_ori>_F (FST-code `fst`).

The paper's alpha: 0.2 CIFAR-10, 0.1 GTSRB, 0.001 CIFAR-100/Tiny-ImageNet
(docs/methods.md, "Supervised track: defenses").
"""
from clipbd.supervised.defenses import register
from clipbd.supervised.defenses.base import SupDefense


@register("fst")
class FeatureShiftTuning(SupDefense):
    reinit_head = True
    uses_alpha = True
