"""Captioned image corpora for contrastive training, built from labelled splits + templates."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from clipbd.data.corpus import CorpusImages
from clipbd.data.store import ImageSet


@dataclass
class CaptionedImages:
    images: torch.Tensor | CorpusImages  # uint8 [N,H,W,3]; a view: read on indexing
    caption_ids: torch.Tensor  # long [N,K]: K candidate captions per image (indices into bank)
    bank: torch.Tensor  # long [M,L]: tokenized captions


def templated(parts: list[tuple[ImageSet, list[str]]], tok) -> CaptionedImages:
    """Every image gets all its dataset's templates as candidate captions (one drawn per step)."""
    texts: list[str] = []
    index: dict[str, int] = {}
    rows, images = [], []
    width = max(len(t) for _, t in parts)
    for data, templates in parts:
        ids = []
        for cls in data.classes:
            row = []
            for j in range(width):  # datasets with fewer templates cycle through theirs
                cap = templates[j % len(templates)].format(cls)
                if cap not in index:
                    index[cap] = len(texts)
                    texts.append(cap)
                row.append(index[cap])
            ids.append(row)
        rows.append(torch.tensor(ids)[data.labels])
        images.append(data.images)
    # the parts' images end to end, as a lazy view (their rows are read a batch per step)
    source = torch.cat([torch.full((len(d),), s, dtype=torch.long) for s, d in enumerate(images)])
    row = torch.cat([torch.arange(len(d)) for d in images])
    return CaptionedImages(CorpusImages(images, source, row), torch.cat(rows), tok(texts))


def fixed(data: ImageSet, tok) -> CaptionedImages:
    """One stored caption per image (a poisoned corpus)."""
    assert data.captions is not None
    texts = sorted(set(data.captions))
    index = {t: i for i, t in enumerate(texts)}
    ids = torch.tensor([[index[c]] for c in data.captions])
    return CaptionedImages(data.images, ids, tok(texts))


def random_caption(cls: str, templates: list[str], rng: random.Random) -> str:
    return rng.choice(templates).format(cls)
