"""`trigger`: an attack's trigger drawn from the seed."""
from __future__ import annotations

import time

from clipbd import attacks
from clipbd.artifacts import save_tensors
from clipbd.records import record
from clipbd.verbs import output, verb


@verb("trigger", "Draw an attack's trigger from the seed and store it.", output())
def trigger(cfg, out, code):
    t0 = time.time()
    attack = attacks.get(cfg["attack"], cfg["params"], cfg["image_size"])
    save_tensors(out, attack.make_trigger(cfg["seed"]), {"attack": cfg["attack"]})
    record(out, "trigger", cfg, [], code, cfg["seed"], t0)
