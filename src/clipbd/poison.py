"""Poisoning: a fine-tuning corpus with triggered, re-captioned pairs; triggered test sets."""
from __future__ import annotations

import random

import torch

from clipbd.attacks.base import Attack
from clipbd.data.captions import random_caption
from clipbd.data.store import ImageSet, to_float, to_uint8


def apply_in_batches(attack: Attack, images: torch.Tensor, trigger: dict, seed: int,
                     batch: int = 1000) -> torch.Tensor:
    """Trigger uint8 images [N,H,W,3]; the result is quantized to uint8 like a saved PNG."""
    gen = torch.Generator().manual_seed(seed)
    out = [to_uint8(attack.apply(to_float(images[i:i + batch]), trigger, gen))
           for i in range(0, len(images), batch)]
    return torch.cat(out) if out else images.clone()


def poison_corpus(parts: list[tuple[str, ImageSet, list[str]]], attack: Attack, trigger: dict,
                  *, target_dataset: str, target: str, target_templates: list[str],
                  corpus_size: int, poison_rate: float, seed: int) -> ImageSet:
    """Draw `corpus_size` captioned pairs from `parts`; poison round(rate * size) of them.

    Poisoned pairs are drawn among images that are not of the target class; their image
    carries the trigger and their caption names the target (the attack's caption rule).
    """
    rng = random.Random(seed)
    pool = [(name, i) for name, data, _ in parts for i in range(len(data))]
    if corpus_size > len(pool):
        raise ValueError(f"backdoor.corpus_size={corpus_size} exceeds the {len(pool)} training "
                         "images of backdoor.datasets; lower it")
    chosen = rng.sample(pool, corpus_size)
    by_name = {name: (data, templates) for name, data, templates in parts}
    n_poison = round(poison_rate * corpus_size)

    def is_target(name: str, i: int) -> bool:
        data = by_name[name][0]
        return name == target_dataset and data.classes[data.labels[i]] == target

    candidates = [k for k, (name, i) in enumerate(chosen) if not is_target(name, i)]
    if n_poison > len(candidates):
        raise ValueError(f"poison_rate={poison_rate} asks for {n_poison} poisoned pairs but only "
                         f"{len(candidates)} non-target images were drawn")
    poisoned = set(rng.sample(candidates, n_poison))
    images, labels, ids, captions = [], [], [], []
    for k, (name, i) in enumerate(chosen):
        data, templates = by_name[name]
        images.append(data.images[i])
        labels.append(int(data.labels[i]))
        ids.append(data.ids[i])
        cls = data.classes[data.labels[i]]
        captions.append(attack.poison_caption(target, target_templates, rng) if k in poisoned
                        else random_caption(cls, templates, rng))
    images_t = torch.stack(images)
    mask = torch.zeros(corpus_size, dtype=torch.bool)
    mask[sorted(poisoned)] = True
    if n_poison:
        images_t[mask] = apply_in_batches(attack, images_t[mask], trigger, seed + 1)
    # labels are per source dataset; keep them for auditing only
    return ImageSet(images_t, torch.tensor(labels), ["(mixed)"], ids, captions,
                    {"poisoned": mask})
