"""`sup-report`: the supervised CA/ASR table and the rate/alpha figures."""
from __future__ import annotations

import time

from clipbd.records import record_outputs
from clipbd.supervised import report
from clipbd.verbs import arg, output, verb


@verb("sup-report", "Supervised: CA/ASR table (CSV+MD) and rate/alpha figures (PNG+PDF).",
      arg("--alpha", type=float, default=0.2, help="FST alpha drawn in the rate figure"),
      output("--csv"), output("--markdown"), output("--rate-png"), output("--rate-pdf"),
      output("--alpha-png"), output("--alpha-pdf"), arg("metrics", nargs="*"))
def tables(alpha, csv, markdown, rate_png, rate_pdf, alpha_png, alpha_pdf, metrics, code):
    t0 = time.time()
    outs = [csv, markdown, rate_png, rate_pdf, alpha_png, alpha_pdf]
    report.write(metrics, alpha, *outs)
    record_outputs(outs, "sup_report", metrics, code, t0, config={"alpha": alpha})
