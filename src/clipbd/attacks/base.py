"""The attack interface: a stored trigger, how to apply it, how to caption a poisoned pair.

Two kinds of trigger:
* drawn: `make_trigger(seed)` draws everything random once (rule `trigger`);
* learned (`learned = True`): `learn(ctx)` optimizes it (rule `learn_trigger`), e.g. an
  encoder/decoder (SSBA) or a patch optimized against the clean CLIP (TrojVQA, BadCLIP).
Either way the result is a dict of tensors stored as a versioned safetensors artifact.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from clipbd.data.store import ImageSet


@dataclass
class TriggerContext:
    """What a learned trigger may use; nothing from the test split."""
    model: torch.nn.Module | None  # the clean CLIP (only for attacks with needs_model)
    tokenizer: object
    corpus: list[tuple[str, ImageSet, list[str]]]  # (dataset, train split, templates) of backdoor.datasets
    target_dataset: str
    target: str  # target class name
    target_templates: list[str]
    seed: int
    backdoor_datasets: tuple[str, ...] = ()  # the poisoning corpus (backdoor.datasets)

    def target_images(self) -> torch.Tensor:
        """uint8 [N,H,W,3] training images of the target class in the target dataset."""
        for name, data, _ in self.corpus:
            if name == self.target_dataset:
                return data.images[data.labels == data.classes.index(self.target)]
        raise ValueError(f"target dataset {self.target_dataset!r} is not in backdoor.datasets")


class Attack:
    """Facts about an attack live on its class: the pipeline reads them, never a list."""
    name: str = ""  # the registry name (set by `@register`)
    title: str = ""  # its name in the papers' tables (default: `name`)
    section: str = ""  # its section in docs/methods.md (default "Attack: <title>")
    order: int = 100  # its place in the tables (lower first; then by name)
    dual_key: bool = False  # True: the backdoor also needs a text key (`text_prefix`), so a
    # defense without a text encoder (`Defense.text_encoder` False) cannot be evaluated on it
    learned: bool = False  # True: the trigger is optimized by `learn` (rule learn_trigger)
    needs_model: bool = False  # True: `learn` uses the clean CLIP

    def __init__(self, cfg: dict, image_size: int):
        self.cfg = cfg
        self.image_size = image_size

    @property
    def text_prefix(self) -> str:
        """Test-time text key (dual-key attacks); "" for image-only triggers."""
        return ""

    def make_trigger(self, seed: int) -> dict[str, torch.Tensor]:
        """Everything random about the trigger, drawn once from `seed`, stored as an artifact."""
        raise NotImplementedError

    def learn(self, ctx: TriggerContext) -> dict[str, torch.Tensor]:
        """Learned triggers: optimize and return the trigger tensors (seeded by ctx.seed)."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, trigger: dict[str, torch.Tensor],
              gen: torch.Generator) -> torch.Tensor:
        """Triggered copy of float images x [N,3,H,W] in [0,1]; `gen` drives per-image randomness."""
        raise NotImplementedError

    def bind_corpus(self, parts: list[tuple[str, ImageSet, list[str]]], target: str,
                    seed: int) -> None:
        """Called by poison_corpus before captioning: attacks whose captions come from the
        corpus itself (BadCLIP's natural captions) read them here; the others do nothing."""

    def poison_caption(self, target: str, templates: list[str], rng: random.Random) -> str:
        """Caption of a poisoned pair: by default a random class template naming the target."""
        return self.text_prefix + rng.choice(templates).format(target)
