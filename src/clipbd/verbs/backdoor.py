"""`backdoor`: the clean CLIP fine-tuned on a poisoned corpus."""
from __future__ import annotations

import time

import torch

from clipbd import accel, models
from clipbd.artifacts import file_sha256
from clipbd.records import config_hash, record
from clipbd.data.captions import fixed
from clipbd.data.corpus import load_corpus
from clipbd.train import contrastive, curve
from clipbd.train.state import TrainState
from clipbd.verbs import arg, output, verb


@verb("backdoor", "Fine-tune the clean CLIP on a poisoned corpus.",
      arg("--clean", "clean_path"), arg("--poisoned", "poisoned_path"), output())
def backdoor(cfg, clean_path, poisoned_path, out, code):
    t0 = time.time()
    b = cfg["backdoor"]
    model, arch = models.load_checkpoint(clean_path)
    accel.place(model)
    data = fixed(load_corpus(poisoned_path), models.tokenizer(arch))  # images read per step
    state = TrainState(out, config_hash([cfg, *map(file_sha256, (clean_path, poisoned_path))]))
    torch.manual_seed(cfg["seed"])
    losses = contrastive.train(model, data, steps=b["steps"], batch_size=b["batch_size"],
                               lr=b["lr"], weight_decay=b["weight_decay"], warmup=b["warmup"],
                               seed=cfg["seed"], state=state, desc="backdoor")
    models.save_checkpoint(out, model, arch)
    state.clear()
    record(out, "backdoor", cfg, [clean_path, poisoned_path], code, cfg["seed"], t0,
             final_loss=losses[-1] if losses else None, **curve.curves(train=losses))
