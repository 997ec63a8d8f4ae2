"""Cached image features: one encoding of (model, test split, trigger), shared by every consumer.

A defense that leaves the image encoder alone (`Defense.frozen_image`: none, CoOp, CBPT,
linear probe) classifies from the encoder's output through a head, so its evaluation needs
the encoder's features, not the images: the `features` rule encodes the clean and the
triggered test set of a model once and every such defense's `evaluate` reads them.
The numbers are the same as encoding in the job (same batches, same code path; tested).
"""
from __future__ import annotations

import time

import torch

from clipbd import accel, models  # models: open_clip on first use
from clipbd.artifacts import load_tensors, save_tensors, write_sidecar
from clipbd.data.store import load_split, split_meta, to_float
from clipbd.models.zeroshot import Classifier

CLEAN, TRIGGERED = "clean", "triggered"


@torch.no_grad()
def encode(model: torch.nn.Module, images_u8: torch.Tensor, batch: int) -> torch.Tensor:
    """[N, D] image features, in the batches `evaluate` uses (so results match bit for bit)."""
    return encode_with(Classifier(model, torch.nn.Identity()), images_u8, batch)


@torch.no_grad()
def encode_with(classifier: Classifier, images_u8: torch.Tensor, batch: int) -> torch.Tensor:
    """[N, D] features of a classifier's image side (prompted or tuned encoder included)."""
    classifier.eval()
    return batched(classifier, images_u8, batch, classifier.features)


@torch.no_grad()
def batched(module: torch.nn.Module, images_u8: torch.Tensor, batch: int,
            fn=None) -> torch.Tensor:
    """`fn` (default: the module itself) over batches of uint8 images, as floats in [0,1] on
    the module's device; returns float32 on the CPU whatever the device and autocast."""
    dev = accel.device_of(module)
    run = accel.compiled(fn or module)
    out = []
    for i in range(0, len(images_u8), batch):
        with accel.autocast(dev):
            out.append(run(to_float(accel.to(images_u8[i:i + batch], dev))).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def head_logits(classifier: Classifier, feats: torch.Tensor, batch: int) -> torch.Tensor:
    """The classifier's logits from cached features: its head only."""
    classifier.eval()
    dev = accel.device_of(classifier)
    return torch.cat([classifier.head(feats[i:i + batch].to(dev)).float().cpu()
                      for i in range(0, len(feats), batch)])


def write(cfg: dict, model_path: str, test_path: str, poisoned_path: str, out: str,
          code: str) -> None:
    """The `features` step: encode the clean (and, for an attack, the triggered) test set."""
    t0 = time.time()
    model, _ = models.load_checkpoint(model_path)
    accel.place(model).eval()
    bs = cfg["eval_batch_size"]
    tensors = {CLEAN: encode(model, load_split(test_path).images, bs)}
    meta = {"text_prefix": ""}
    if poisoned_path:
        tensors[TRIGGERED] = encode(model, load_split(poisoned_path).images, bs)
        meta["text_prefix"] = split_meta(poisoned_path).get("text_prefix", "")
    save_tensors(out, tensors, meta)
    write_sidecar(out, step="features", config=cfg, code=code, seed=None, started=t0,
                  inputs=[p for p in (model_path, test_path, poisoned_path) if p],
                  extra={"n": {k: int(v.shape[0]) for k, v in tensors.items()}})


def load(path: str) -> dict[str, torch.Tensor]:
    return load_tensors(path)[0]
