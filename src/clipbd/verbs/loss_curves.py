"""`loss-curves`: the training loss curves of the jobs behind metrics JSON files."""
from __future__ import annotations

import time

from clipbd.records import record_outputs
from clipbd.report import loss_curves
from clipbd.verbs import arg, output, verb


@verb("loss-curves", "Training loss curves (PNG+PDF, long CSV) of the jobs behind metrics JSONs.",
      output("--png"), output("--pdf"), arg("--csv"), arg("metrics", nargs="*"))
def curves(png, pdf, csv, metrics, code):
    t0 = time.time()
    found = loss_curves.collect(metrics)
    loss_curves.figure(found, png, pdf)
    loss_curves.write_csv(found, csv)
    record_outputs([png, pdf, csv], "loss_curves", [r["artifact"] for r in found], code, t0)
