"""Determinism: the same config and seed give identical metrics JSON and identical artifacts
(byte for byte) on CPU, in two independent real workflow runs."""
from __future__ import annotations

import pytest
import yaml

from clipbd.artifacts import read_json, sha256_file
from workflow_util import micro_study, snakemake

pytestmark = pytest.mark.integration

STUDY = micro_study(seed=3, steps=6, attack="blended", defense="fst", grid_seed=1)
RUNS = ["shapes/blended/default/none/default/shots~0/seed~3",
        "shapes/blended/default/fst/default/shots~2/seed~1"]


def _run(root):
    (root / "config.yaml").write_text(yaml.safe_dump(STUDY))
    targets = [f"results/metrics/{r}/metrics.json" for r in RUNS]
    res = snakemake(root, *targets)
    assert res.returncode == 0, res.stderr[-5000:]
    metrics = {r: read_json(root / t) for r, t in zip(RUNS, targets)}
    hashes = {str(p.relative_to(root)): sha256_file(p)
              for p in sorted((root / "results").rglob("*.safetensors"))}
    return metrics, hashes


def test_same_config_and_seed_same_metrics_and_artifacts(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    m1, h1 = _run(tmp_path / "a")
    m2, h2 = _run(tmp_path / "b")
    assert [m1[r]["metrics"] for r in RUNS] == [m2[r]["metrics"] for r in RUNS]
    for r in RUNS:  # everything but the wall time is the same JSON
        for m in (m1, m2):
            m[r]["provenance"].pop("wall_time_s")
        assert m1[r] == m2[r]
    assert len(h1) >= 8 and h1 == h2
    assert 0 <= m1[RUNS[1]]["metrics"]["ca"] <= 1
