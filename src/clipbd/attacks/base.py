"""The attack interface: a stored trigger, how to apply it, how to caption a poisoned pair."""
from __future__ import annotations

import random

import torch


class Attack:
    name: str = ""
    text_prefix: str = ""  # test-time text key (dual-key attacks); "" for image-only triggers

    def __init__(self, cfg: dict, image_size: int):
        self.cfg = cfg
        self.image_size = image_size

    def make_trigger(self, seed: int) -> dict[str, torch.Tensor]:
        """Everything random about the trigger, drawn once from `seed`, stored as an artifact."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, trigger: dict[str, torch.Tensor],
              gen: torch.Generator) -> torch.Tensor:
        """Triggered copy of float images x [N,3,H,W] in [0,1]; `gen` drives per-image randomness."""
        raise NotImplementedError

    def poison_caption(self, target: str, templates: list[str], rng: random.Random) -> str:
        """Caption of a poisoned pair: by default a random class template naming the target."""
        return self.text_prefix + rng.choice(templates).format(target)
