"""`paper`: one paper table (CSV+MD+LaTeX) or figure (PNG+PDF) from the tidy table."""
from __future__ import annotations

import time

from clipbd.records import record_outputs
from clipbd.verbs import arg, pairs, verb


@verb("paper", "Build one paper table (CSV+MD+LaTeX) or figure (PNG+PDF) from the tidy table.",
      arg("--item"), arg("--table", default=""), pairs("--probe", "probes"),
      arg("--deltas", nargs="*", default=[]), arg("--prefix"))
def build(item, table, probes, deltas, prefix, code):
    import pandas as pd

    from clipbd.report import plan

    t0 = time.time()
    df = pd.read_csv(table) if table else None
    outs = plan.make(item, df, prefix, probes, deltas)
    record_outputs(outs, "paper", [p for p in (table, *probes.values(), *deltas) if p], code, t0)
