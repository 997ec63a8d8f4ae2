"""`gallery`: clean vs triggered test images per attack, and the benign perturbations."""
from __future__ import annotations

import time

from clipbd.records import record_outputs
from clipbd.data.store import load_split
from clipbd.report import gallery
from clipbd.verbs import arg, output, pairs, verb


@verb("gallery", "Clean vs triggered images per attack, and the benign perturbations.",
      arg("--test"), pairs("--triggered"), arg("--seed", type=int, default=0),
      output("--png"), output("--pdf"), output("--perturbations-png"),
      output("--perturbations-pdf"))
def images(test, triggered, seed, png, pdf, perturbations_png, perturbations_pdf, code):
    t0 = time.time()
    clean = load_split(test)
    gallery.triggers(clean, {name: load_split(path) for name, path in triggered.items()},
                     png, pdf)
    gallery.perturbations(clean, perturbations_png, perturbations_pdf, seed)
    record_outputs([png, pdf, perturbations_png, perturbations_pdf], "gallery",
                   [test, *triggered.values()], code, t0)
