"""`pretrain`: the clean CLIP, pre-trained from scratch or imported from local weights."""
from __future__ import annotations

import time

import torch

from clipbd import accel, models
from clipbd.records import config_hash, record
from clipbd.data.captions import templated
from clipbd.data.store import load_split
from clipbd.train import contrastive, curve
from clipbd.train.state import TrainState
from clipbd.verbs import output, pairs, verb


@verb("pretrain", "Pre-train the clean CLIP from scratch, or import local weights.",
      pairs("--split", "splits"), output())
def pretrain(cfg, splits: dict[str, str], out, code):
    """Train the clean CLIP from scratch, or import local weights (model.weights)."""
    t0 = time.time()
    m, p = cfg["model"], cfg["pretrain"]
    if m["weights"]:
        model = models.load_pretrained(m["arch"], m["weights"], m["sha256"])
        models.save_checkpoint(out, model, m["arch"])
        record(out, "pretrain", cfg, [m["weights"]], code, cfg["seed"], t0)
        return
    torch.manual_seed(cfg["seed"])
    model = accel.place(models.create(m["arch"]))
    tok = models.tokenizer(m["arch"])
    parts = [(load_split(splits[n]), cfg["datasets"][n]["templates"]) for n in p["datasets"]]
    data = templated(parts, tok)
    state = TrainState(out, config_hash(cfg))
    losses = contrastive.train(model, data, steps=p["steps"], batch_size=p["batch_size"],
                               lr=p["lr"], weight_decay=p["weight_decay"], warmup=p["warmup"],
                               seed=cfg["seed"], state=state, desc="pretrain")
    models.save_checkpoint(out, model, m["arch"])
    state.clear()
    record(out, "pretrain", cfg, list(splits.values()), code, cfg["seed"], t0,
             final_loss=losses[-1] if losses else None, **curve.curves(train=losses))
