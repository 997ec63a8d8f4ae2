"""`aggregate`: the metrics JSON files collected into the tidy table."""
from __future__ import annotations

import time

from clipbd.artifacts import write_json
from clipbd.records import record_outputs
from clipbd.report import aggregate
from clipbd.verbs import arg, output, verb


@verb("aggregate", "Collect metrics JSON files into the tidy table.",
      output(), arg("--json", default="", help="also the scores per model as JSON "
                                                "(dvc.yaml's metrics)"),
      arg("metrics", nargs="*"))
def collect(out, json, metrics, code):
    t0 = time.time()
    df = aggregate.table(metrics)
    aggregate.write_csv(df, out)
    if json:
        write_json(json, aggregate.summary(df))
    record_outputs([out, json], "aggregate", metrics, code, t0)
