"""Defense registry. Adding a defense = one module here + its name in MODULES + a config block."""
from clipbd.defenses.base import Defense, DefenseContext
from clipbd.registry import Registry

MODULES = ("none", "linear_probe", "coop", "cbpt", "vpt", "rvpt", "finetune", "fst", "cleanclip")
REGISTRY: Registry[Defense] = Registry("defense", "clipbd.defenses", MODULES)
register = REGISTRY.register


def get(name: str, cfg: dict) -> Defense:
    return REGISTRY.get(name)(cfg)


__all__ = ["Defense", "DefenseContext", "REGISTRY", "get", "register"]
