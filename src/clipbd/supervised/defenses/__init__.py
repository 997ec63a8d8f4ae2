"""Supervised-track defenses (FST's `--ft_mode`s); one file each, behind a registry."""
from clipbd.registry import Registry
from clipbd.supervised.defenses.base import SupDefense

REGISTRY: Registry[SupDefense] = Registry("supervised defense", "clipbd.supervised.defenses")
register = REGISTRY.register


def get(name: str, cfg: dict) -> SupDefense:
    return REGISTRY.get(name)(cfg)


__all__ = ["REGISTRY", "SupDefense", "get", "register"]
