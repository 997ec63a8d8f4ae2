"""`learn-trigger`: an optimized trigger (SSBA, TrojVQA, BadCLIP), on training data only."""
from __future__ import annotations

import time

import torch

from clipbd import accel, attacks, models
from clipbd.artifacts import save_tensors
from clipbd.records import record
from clipbd.data.store import load_split
from clipbd.train import curve
from clipbd.verbs import arg, output, pairs, verb


@verb("learn-trigger", "Optimize a learned trigger (SSBA, TrojVQA, BadCLIP) on training data.",
      arg("--model", "model_path", default=""), pairs("--split", "splits"), output())
def learn_trigger(cfg, model_path, splits: dict[str, str], out, code):
    """Optimize a learned trigger (SSBA encoder, TrojVQA/BadCLIP patch) on training data only."""
    t0 = time.time()
    attack = attacks.get(cfg["attack"], cfg["params"], cfg["image_size"])
    model, tok = None, None
    if model_path:
        model, arch = models.load_checkpoint(model_path)
        accel.place(model)
        tok = models.tokenizer(arch)
    ds = cfg["datasets"][cfg["target_dataset"]]
    corpus = [(n, load_split(splits[n]), cfg["datasets"][n]["templates"]) for n in splits]
    ctx = attacks.TriggerContext(model, tok, corpus, cfg["target_dataset"], ds["target"],
                                 ds["templates"], cfg["seed"],
                                 tuple(cfg["backdoor"]["datasets"]))
    torch.manual_seed(cfg["seed"])
    save_tensors(out, attack.learn(ctx), {"attack": cfg["attack"]})
    record(out, "learn_trigger", cfg, [model_path, *splits.values()], code, cfg["seed"], t0,
             **curve.of(attack))
