"""`probe`: per-layer resistivity, features and attention of a model (RVPT Figs. 1, 4, 5)."""
from __future__ import annotations

from clipbd.report.probe import probe
from clipbd.verbs import arg, output, verb


@verb("probe", "Per-layer resistivity, features, attention of a model (RVPT Figs. 1, 4, 5).",
      arg("--model", "model_path"), arg("--delta", "delta_path", default=""),
      arg("--test", "test_path"), arg("--poisoned", "poisoned_path"),
      arg("--n", type=int, default=200), output())
def run(cfg, model_path, delta_path, test_path, poisoned_path, n, out, code):
    probe(cfg, model_path, delta_path, test_path, poisoned_path, out, code, n)
