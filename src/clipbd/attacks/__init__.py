"""Attack registry. Adding an attack = one module here + its name in MODULES + a config block."""
from clipbd.attacks.base import Attack
from clipbd.registry import Registry

MODULES = ("badnet", "blended", "sig", "wanet")
REGISTRY: Registry[Attack] = Registry("attack", "clipbd.attacks", MODULES)
register = REGISTRY.register


def get(name: str, cfg: dict, image_size: int) -> Attack:
    return REGISTRY.get(name)(cfg, image_size)
