"""Defense registry. Adding a defense = one module here (a `@register`ed `Defense` class, with
its config schema on the class) and its test; the registry finds the module."""
from clipbd.defenses.base import Defense, DefenseContext
from clipbd.registry import Registry

REGISTRY: Registry[Defense] = Registry("defense", "clipbd.defenses")
register = REGISTRY.register


def get(name: str, cfg: dict) -> Defense:
    return REGISTRY.get(name)(cfg)


__all__ = ["Defense", "DefenseContext", "REGISTRY", "get", "register"]
