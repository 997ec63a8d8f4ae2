"""The paper rules and `snakemake --report` on a real (micro) study: synthetic shapes, a few
steps, BadNet vs VPT and RVPT, so that tables, probes and probe figures all run.

The study is conftest.py's `micro` (workflow_util.MICRO), run once per test process and also
read by test_audit and test_determinism; it is only read here (the report goes to tmp_path)."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from clipbd.artifacts import read_json
from workflow_util import snakemake

pytestmark = pytest.mark.integration

TABLES = ["rvpt/table1", "rvpt/table2", "rvpt/table3", "rvpt/table8", "rvpt/table9"]
FIGURES = ["rvpt/fig1", "rvpt/fig4", "rvpt/fig5"]


def test_paper_files_are_exactly_the_planned_set(micro):
    paper = micro / "results" / "paper"
    files = sorted(str(p.relative_to(paper)) for p in paper.rglob("*")
                   if p.is_file() and not p.name.endswith(".json"))
    expected = ["captions.md"] + [f"{t}.{e}" for t in TABLES for e in ("csv", "md", "tex")]
    assert files == sorted(expected + [f"{f}.{e}" for f in FIGURES for e in ("png", "pdf")])
    for f in FIGURES:
        assert (paper / f"{f}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captions = (paper / "captions.md").read_text()
    assert "`rvpt/fig4.{png,pdf}`: RVPT Fig. 4:" in captions
    assert "- cbpt/shots: shots: the grid does not vary `shots`" in captions
    assert "- CBPT main table: the grid has no run with defense=cbpt" in captions
    probes = sorted(p.parent.relative_to(micro / "results" / "probes").as_posix()
                    for p in (micro / "results" / "probes").rglob("probe.safetensors"))
    assert probes == ["shapes/badnet/default/none/default/shots~0/seed~0",
                      "shapes/badnet/default/rvpt/default/shots~2/seed~0",
                      "shapes/badnet/default/vpt/default/shots~2/seed~0",
                      "shapes/clean/default/none/default/shots~0/seed~0"]


def test_table_cells_equal_the_metrics_json(micro):
    runs = {}
    for path in (micro / "results" / "metrics").rglob("metrics.json"):
        m = read_json(path)["metrics"]
        runs[(m["attack"], m["defense"])] = m
    t = pd.read_csv(micro / "results" / "paper" / "rvpt" / "table1.csv", index_col=0)
    assert list(t.columns) == ["BadNet", "Blended", "ISSBA", "WaNet", "TrojVQA", "BadCLIP"]
    for label, defense in (("No defense", "none"), ("RVPT", "rvpt")):
        m = runs[("badnet", defense)]
        assert t.loc[label, "BadNet"] == f"{100 * m['asr']:.2f} ({100 * m['ca']:.2f})"
    # runs the grid does not have: "—"
    assert t.loc["CleanCLIP", "BadNet"] == "—" and (t["Blended"] == "—").all()
    pa = pd.read_csv(micro / "results" / "paper" / "rvpt" / "table3.csv", index_col=0)
    assert pa.loc["Backdoored", "BadNet"] == f"{100 * runs[('badnet', 'none')]['pa']:.2f}"
    t8 = (micro / "results" / "paper" / "rvpt" / "table8.tex").read_text()
    assert r"\toprule" in t8 and r"\bottomrule" in t8


def test_html_report_has_categories_and_captions(micro, tmp_path):
    res = snakemake(micro, "--report", str(tmp_path / "report.html"), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    for text in ("RVPT Fig. 1: perturbation resistivity", "RVPT Table 9: compute per defense",
                 "RVPT Fig. 9: clean test images", "captions.md"):
        assert text in html, text
    assert re.search(r"rvpt", html) and re.search(r"overview", html)
