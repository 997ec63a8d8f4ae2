"""`fewshot`: k training images per class, a seeded stratified draw."""
from __future__ import annotations

import time

from clipbd.artifacts import write_json
from clipbd.records import record
from clipbd.data import fewshot
from clipbd.data.store import load_split, manifest
from clipbd.verbs import arg, output, verb


@verb("fewshot", "Draw k images per class (seeded, stratified).", arg("--train", "train_path"), output())
def sample_fewshot(cfg, train_path, out, code):
    t0 = time.time()
    data = load_split(train_path)
    idx = fewshot.sample(data.labels, cfg["shots"], cfg["seed"], len(data.classes))
    sub = data.subset(idx)
    write_json(out, {"indices": idx, "shots": cfg["shots"], "seed": cfg["seed"],
                     "manifest": manifest(sub)})
    record(out, "fewshot", cfg, [train_path], code, cfg["seed"], t0)
