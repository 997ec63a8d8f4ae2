"""Attack registry. Adding an attack = one module here (a `@register`ed `Attack` class, with
its config schema on the class) and its test; the registry finds the module."""
from clipbd.attacks.base import Attack, TriggerContext
from clipbd.registry import Registry

REGISTRY: Registry[Attack] = Registry("attack", "clipbd.attacks")
register = REGISTRY.register


def get(name: str, cfg: dict, image_size: int) -> Attack:
    return REGISTRY.get(name)(cfg, image_size)


__all__ = ["Attack", "REGISTRY", "TriggerContext", "get", "register"]
