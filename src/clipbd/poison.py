"""Poisoning: a fine-tuning corpus with triggered, re-captioned pairs; triggered test sets.

Poisoned captions are drawn from their own templates (`backdoor.poison_templates`), not from
the evaluation prompts (`datasets.<name>.templates`): the lineage (CleanCLIP/BadCLIP
`create_backdoor_data.py`) captions each poisoned pair with one of the 80 OpenAI ImageNet
templates drawn at random, so the backdoor is not tied to any one test-time prompt.
"""
from __future__ import annotations

import importlib.util
import random
from functools import lru_cache
from typing import Iterator

import torch

from clipbd.attacks.base import Attack
from clipbd.data.captions import random_caption
from clipbd.data.corpus import CorpusImages
from clipbd.data.store import ImageSet, to_float, to_uint8


OPENAI_IMAGENET = "openai_imagenet"  # the 80 OpenAI ImageNet templates (open_clip's copy)
DATASET = "dataset"  # each dataset's own `templates` (its evaluation prompts)


@lru_cache(maxsize=1)
def openai_imagenet_templates() -> tuple[str, ...]:
    """The 80 OpenAI ImageNet prompt templates, as "{}" strings, from open_clip's copy.

    Read from open_clip's `zero_shot_metadata.py` (plain data, no imports) without importing
    the open_clip package, which pulls in torchvision: poisoning jobs stay light.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("backdoor.poison_templates=openai_imagenet needs open_clip installed")
    path = f"{list(spec.submodule_search_locations)[0]}/zero_shot_metadata.py"
    meta_spec = importlib.util.spec_from_file_location("clipbd._open_clip_zero_shot", path)
    meta = importlib.util.module_from_spec(meta_spec)
    meta_spec.loader.exec_module(meta)
    return tuple(t("{}") for t in meta.OPENAI_IMAGENET_TEMPLATES)


def poison_templates(setting, dataset_templates: list[str]) -> list[str]:
    """Resolve `backdoor.poison_templates` for a dataset whose evaluation templates are given."""
    if setting == OPENAI_IMAGENET:
        return list(openai_imagenet_templates())
    if setting == DATASET:
        return list(dataset_templates)
    if isinstance(setting, (list, tuple)) and setting and all("{}" in t for t in setting):
        return list(setting)
    raise ValueError(f"backdoor.poison_templates={setting!r}: use {OPENAI_IMAGENET!r}, "
                     f"{DATASET!r} or a list of templates containing {{}}")


def trigger_batches(attack: Attack, images, trigger: dict, seed: int,
                    batch: int = 1000) -> Iterator[torch.Tensor]:
    """Triggered uint8 copies of images [N,H,W,3] (a tensor or on-disk `Rows`), `batch` rows
    at a time, one generator across the batches: what `apply_in_batches` concatenates."""
    gen = torch.Generator().manual_seed(seed)
    for i in range(0, len(images), batch):
        yield to_uint8(attack.apply(to_float(images[i:i + batch]), trigger, gen))


def apply_in_batches(attack: Attack, images, trigger: dict, seed: int,
                     batch: int = 1000) -> torch.Tensor:
    """Trigger uint8 images [N,H,W,3]; the result is quantized to uint8 like a saved PNG."""
    out = list(trigger_batches(attack, images, trigger, seed, batch))
    return torch.cat(out) if out else images[:0].clone()


def poison_corpus(parts: list[tuple[str, ImageSet, list[str]]], attack: Attack, trigger: dict,
                  *, target_dataset: str, target: str, target_templates: list[str],
                  corpus_size: int, poison_rate: float, seed: int,
                  decoy_templates: dict[str, list[str]] | None = None) -> ImageSet:
    """Draw `corpus_size` captioned pairs from `parts`; poison round(rate * size) of them.

    Poisoned pairs are drawn among images that are not of the target class; their image
    carries the trigger and their caption names the target (the attack's caption rule,
    drawing one of `target_templates`, the poisoning templates, per pair with the corpus rng).
    Clean pairs keep their own caption (caption corpora) or get one of their dataset's
    `templates` (the parts' third entry).

    Attacks may add partial-key decoys (TrojVQA's dual-key training): `image_only_rate` and
    `text_only_rate` in the attack's config (0 when absent) turn that share of the other
    pairs into (triggered image, true caption) and (clean image, the attack's caption rule
    applied to the true class: TrojVQA text key + template, BadCLIP a natural frame); their
    masks are kept as extra["image_key_only"] and extra["text_key_only"]. Text-only decoys
    draw from `decoy_templates[dataset]` (the poisoning templates; default the parts' own).

    The images are not copied: the result's `images` is a `CorpusImages` view of the parts'
    rows (which may be lazy `Rows`) plus the triggered rows, the only ones read here
    (`clipbd.data.corpus.save_corpus` writes it as an index into the splits).
    """
    attack.bind_corpus(parts, target, seed)
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
    image_only, text_only = _decoys(attack, rng, corpus_size, poisoned)
    labels, ids, captions = [], [], []
    for k, (name, i) in enumerate(chosen):
        data, templates = by_name[name]
        labels.append(int(data.labels[i]))
        ids.append(data.ids[i])
        cls = data.classes[data.labels[i]]
        if k in poisoned:
            captions.append(attack.poison_caption(target, target_templates, rng))
        elif k in text_only:
            frames = (decoy_templates or {}).get(name, templates)
            captions.append(attack.poison_caption(cls, frames, rng))
        elif data.captions is not None:  # a caption corpus (CC3M CSV) keeps its own captions
            captions.append(data.captions[i])
        else:
            captions.append(random_caption(cls, templates, rng))
    extra = {"poisoned": _mask(corpus_size, poisoned)}
    if image_only or text_only:
        extra["image_key_only"] = _mask(corpus_size, image_only)
        extra["text_key_only"] = _mask(corpus_size, text_only)
    images = _images(parts, chosen, attack, trigger, seed, extra["poisoned"],
                     extra.get("image_key_only"))
    # labels are per source dataset; keep them for auditing only
    return ImageSet(images, torch.tensor(labels), ["(mixed)"], ids, captions, extra)


def _images(parts, chosen: list[tuple[str, int]], attack: Attack, trigger: dict, seed: int,
            poisoned: torch.Tensor, image_only: torch.Tensor | None) -> CorpusImages:
    """The corpus's images as references to the parts' rows; only the poisoned rows (seed+1)
    and the image-only decoys (seed+3) are read, a batch at a time, triggered and kept."""
    names = {name: s for s, (name, _, _) in enumerate(parts)}
    source = torch.tensor([names[name] for name, _ in chosen], dtype=torch.long)
    row = torch.tensor([i for _, i in chosen], dtype=torch.long)
    clean = CorpusImages([data.images for _, data, _ in parts], source, row)
    keyed = poisoned if image_only is None else poisoned | image_only
    slot = torch.full((len(chosen),), -1, dtype=torch.long)
    slot[keyed] = torch.arange(int(keyed.sum()))  # stored in corpus order
    changed = torch.empty((int(keyed.sum()), *clean.row_shape), dtype=torch.uint8)
    for mask, offset in ((poisoned, 1), (image_only, 3)):
        if mask is None or not mask.any():
            continue
        rows = mask.nonzero().flatten()
        done = 0
        for batch in trigger_batches(attack, clean.select(rows), trigger, seed + offset):
            changed[slot[rows[done:done + len(batch)]]] = batch
            done += len(batch)
    return CorpusImages(clean.sources, source, row, slot, changed)


def _mask(n: int, chosen: set[int]) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[sorted(chosen)] = True
    return mask


def _decoys(attack: Attack, rng: random.Random, corpus_size: int,
            poisoned: set[int]) -> tuple[set[int], set[int]]:
    """Pairs (disjoint, none poisoned) that get only the image key / only the text key."""
    n_image = round(attack.cfg.get("image_only_rate", 0) * corpus_size)
    n_text = round(attack.cfg.get("text_only_rate", 0) * corpus_size)
    if not n_image and not n_text:
        return set(), set()  # no rng draw: corpora of single-key attacks are unchanged
    rest = [k for k in range(corpus_size) if k not in poisoned]
    if n_image + n_text > len(rest):
        raise ValueError(f"image_only_rate/text_only_rate ask for {n_image + n_text} decoy "
                         f"pairs but only {len(rest)} pairs are not poisoned")
    drawn = rng.sample(rest, n_image + n_text)
    return set(drawn[:n_image]), set(drawn[n_image:])
