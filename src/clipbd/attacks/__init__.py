"""Attack registry. Adding an attack = one module here + its name in MODULES + a config block."""
from clipbd.attacks.base import Attack, TriggerContext
from clipbd.registry import Registry

MODULES = ("badnet", "blended", "sig", "wanet", "ssba", "trojvqa", "badclip")
REGISTRY: Registry[Attack] = Registry("attack", "clipbd.attacks", MODULES)
register = REGISTRY.register


def get(name: str, cfg: dict, image_size: int) -> Attack:
    return REGISTRY.get(name)(cfg, image_size)


__all__ = ["Attack", "REGISTRY", "TriggerContext", "get", "register"]
