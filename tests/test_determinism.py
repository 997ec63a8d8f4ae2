"""Determinism: the same config and seed give identical metrics JSON and identical artifacts
(byte for byte) on CPU, in two independent real workflow runs.

The first run is conftest.py's `micro` (workflow_util.MICRO, its whole grid, run once per test
process and shared with test_audit and test_report_workflow); the second is a fresh run of the
same config in a folder of its own, of two of its rows only: every artifact the second run
writes must equal the first run's file at the same path.
"""
from __future__ import annotations

import pytest
import yaml

from clipbd.artifacts import read_json, sha256_file
from workflow_util import MICRO, snakemake

pytestmark = pytest.mark.integration

RUNS = ["shapes/badnet/default/none/default/shots~0/seed~0",
        "shapes/badnet/default/ft/default/shots~2/seed~0"]
TARGETS = [f"results/metrics/{r}/metrics.json" for r in RUNS]


def _read(root):
    """The RUNS' metrics JSON and the sha256 of every .safetensors under `root`/results."""
    metrics = {r: read_json(root / t) for r, t in zip(RUNS, TARGETS)}
    hashes = {str(p.relative_to(root)): sha256_file(p)
              for p in sorted((root / "results").rglob("*.safetensors"))}
    return metrics, hashes


def _run(root):
    (root / "config.yaml").write_text(yaml.safe_dump(MICRO))
    res = snakemake(root, *TARGETS)
    assert res.returncode == 0, res.stderr[-5000:]
    return _read(root)


def test_same_config_and_seed_same_metrics_and_artifacts(micro, tmp_path):
    m1, h1 = _read(micro)
    m2, h2 = _run(tmp_path)
    assert [m1[r]["metrics"] for r in RUNS] == [m2[r]["metrics"] for r in RUNS]
    for r in RUNS:  # everything but the wall time is the same JSON
        for m in (m1, m2):
            m[r]["provenance"].pop("wall_time_s")
        assert m1[r] == m2[r]
    # the second run builds only what the RUNS need; each of its files is the first run's
    assert len(h2) >= 8 and h2 == {p: h1.get(p) for p in h2}
    assert 0 <= m1[RUNS[1]]["metrics"]["ca"] <= 1
