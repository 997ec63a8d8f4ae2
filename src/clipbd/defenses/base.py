"""The defense interface: fit on few-shot clean data -> a delta; compose model + delta -> classifier.

A defense stores only what it changes (prompts, a head, or weights it tunes); the
backdoored checkpoint is never copied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from clipbd.data.store import ImageSet
from clipbd.models.zeroshot import Classifier, ZeroShotHead, class_text_features


@dataclass
class DefenseContext:
    model: torch.nn.Module  # the (backdoored) CLIP, frozen unless the defense says otherwise
    tokenizer: object
    classes: list[str]
    templates: list[str]
    seed: int
    train: ImageSet | None = None  # the dataset's whole training split (defenses that draw a clean corpus)
    # the attack's real trigger (uint8 images -> triggered) and text key, for an oracle ablation
    oracle_trigger: Callable[[torch.Tensor], torch.Tensor] | None = None
    oracle_key: str = ""

    def zero_shot_head(self, prefix: str = "") -> ZeroShotHead:
        feats = class_text_features(self.model, self.tokenizer, self.classes, self.templates, prefix)
        return ZeroShotHead(feats, self.model.logit_scale)


def run_context(cfg: dict, model: torch.nn.Module, arch: str, dataset: str | None = None,
                train: ImageSet | None = None) -> DefenseContext:
    """The context of a `defend`/`evaluate` job: `dataset`'s classes and prompts (default the
    evaluated one), the model's tokenizer, the run's seed."""
    from clipbd import models
    from clipbd.data import dataset_classes

    ds = cfg["datasets"][dataset or cfg["dataset"]]
    return DefenseContext(model, models.tokenizer(arch), dataset_classes(ds), ds["templates"],
                          cfg["run_seed"], train)


class Defense:
    """Facts about a defense live on its class: the grid, the config checks, the probe and the
    paper tables read them, never a list."""
    name: str = ""  # the registry name (set by `@register`)
    title: str = ""  # its name in the papers' tables (default: `name`)
    section: str = ""  # its section in docs/methods.md (default "Defense: <title>")
    order: int = 100  # its place in the tables (lower first; then by name)
    text_encoder: bool = True  # False: its classifier drops the text encoder (a linear head)
    vit_only: bool = False  # True: needs a ViT image encoder (dropped for datasets on RN50)
    prompt_depth: str = ""  # its hyperparameter giving the prompted image-encoder blocks
    text_context: str = ""  # its hyperparameter giving the learnable text context tokens
    probe: bool = False  # True: the probe can open its image encoder (RVPT Figs. 1, 4, 5)
    trains: bool = True  # False: nothing to fit (no `defend` job)
    transfers: bool = False  # True: the delta does not depend on the classes (tune on A, test on B)
    frozen_image: bool = False  # True: the image encoder is untouched (evaluate from cached features)

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def fit(self, ctx: DefenseContext, fewshot: ImageSet) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def classifier(self, ctx: DefenseContext, delta: dict[str, torch.Tensor],
                   text_prefix: str = "") -> Classifier:
        """images in [0,1] -> logits, for the model with this defense's delta applied."""
        raise NotImplementedError
