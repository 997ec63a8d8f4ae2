"""`figure`: the overview figure (PNG+PDF) and Markdown table from the tidy table."""
from __future__ import annotations

import time

import pandas as pd

from clipbd.records import record_outputs
from clipbd.report import figures
from clipbd.verbs import arg, output, verb


@verb("figure", "Overview figure (PNG+PDF) and Markdown table from the tidy table.",
      arg("--table"), output("--png"), output("--pdf"), output("--markdown"))
def overview(table, png, pdf, markdown, code):
    t0 = time.time()
    df = pd.read_csv(table)
    figures.overview(df, png, pdf)
    figures.write_markdown(df, markdown)
    record_outputs([png, pdf, markdown], "figure", [table], code, t0)
