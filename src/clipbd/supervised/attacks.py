"""Attacks of the supervised track: the CLIP track's trigger classes, plus label-consistent.

All attacks are all-to-one (BackdoorBench). `CLEAN_LABEL` attacks poison only target-class
training images and keep their labels (SIG, label-consistent); the others relabel the
poisoned images to the target. Trigger hyperparameters are those of `clipbd.attacks`
(schema `attacks.<name>`), overridden by `supervised.attacks.<name>`.
"""
from __future__ import annotations

from clipbd import attacks as clip_attacks
from clipbd.attacks.base import Attack

SHARED = ("badnet", "blended", "sig", "wanet", "ssba")  # trigger code shared with the CLIP track
OWN = {"lc": "clipbd.supervised.label_consistent"}
CLEAN_LABEL = frozenset({"sig", "lc"})
NAMES = (*SHARED, *OWN)


def attack_class(name: str) -> type[Attack]:
    if name in SHARED:
        return clip_attacks.REGISTRY.get(name)
    if name in OWN:
        import importlib

        return importlib.import_module(OWN[name]).LabelConsistent
    raise KeyError(f"unknown supervised attack {name!r}; known: {', '.join(NAMES)}")


def get(name: str, params: dict, image_size: int) -> Attack:
    return attack_class(name)(params, image_size)


def source_file(name: str) -> str:
    import inspect

    return inspect.getfile(attack_class(name))
