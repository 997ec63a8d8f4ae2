"""dvc.yaml's params, metrics and plots: the resolved study, the scores JSON, the tidy table.

Fast checks on hand-made files and a throwaway git + DVC repository; the full push / clone /
pull of a real study is tests/test_dvc.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clipbd import paths
from clipbd.config import STUDY_OUT, resolve, study
from clipbd.report import aggregate

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def test_summary_keys_scores_by_metrics_folder():
    df = pd.DataFrame([
        {"dataset": "shapes", "attack": "badnet", "defense": "none", "shots": 0, "seed": 0,
         "ca": 0.25, "asr": 1.0, "asr_all": 0.75, "pa": 0.0, "n_test": 60,
         "source": "results/metrics/shapes/badnet/default/none/default/shots~0/seed~0/"
                   "metrics.json"},
        {"dataset": "shapes", "attack": "badnet", "defense": "rvpt", "shots": 2, "seed": 1,
         "ca": 0.5, "asr": 0.125, "asr_all": float("nan"), "pa": 0.5, "n_test": 60,
         "source": "/abs/results/metrics/shapes/badnet/default/rvpt/default/shots~2/seed~1/"
                   "metrics.json"}])
    assert aggregate.summary(df) == {
        "shapes/badnet/default/none/default/shots~0/seed~0":
            {"ca": 0.25, "asr": 1.0, "asr_all": 0.75, "pa": 0.0},
        "shapes/badnet/default/rvpt/default/shots~2/seed~1": {"ca": 0.5, "asr": 0.125, "pa": 0.5}}


def test_dvc_yaml_tracks_the_resolved_study_and_the_report():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stage = dvc["stages"]["study"]
    assert stage["params"] == [{"results/study.json": None}]  # every key of the file
    # whoever runs the study for DVC writes that file: the stage command and both scripts
    for text in (stage["cmd"], (ROOT / "scripts" / "dvc_pull.sh").read_text()):
        assert f"{STUDY_OUT}=results/study.json snakemake" in text
    # the push writes it beside, and moves it in place only once the push goes ahead
    push = (ROOT / "scripts" / "dvc_push.sh").read_text()
    assert f"{STUDY_OUT}=$pending snakemake" in push
    assert push.index('mv "$pending" results/study.json') < push.index("dvc push")
    assert not any("config" in d for d in stage["deps"])  # the config is the params, not files
    assert dvc["metrics"] == [paths.TABLE_JSON] == ["results/tables/metrics.json"]
    (plot,) = dvc["plots"]
    spec = plot[paths.TABLE]
    assert {spec["x"], *spec["y"]} <= set(aggregate.FIRST)
    rules = (ROOT / "workflow" / "rules" / "report.smk").read_text()
    assert "json=paths.TABLE_JSON" in rules  # the aggregate rule writes what dvc.yaml reads
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", "results/study.json"],
                             cwd=ROOT).returncode
    assert ignored == 1  # git keeps it; the rest of results/ stays ignored
    assert subprocess.run(["git", "check-ignore", "-q", "--no-index", "results/models/x"],
                          cwd=ROOT).returncode == 0


def _sh(repo, *cmd):
    res = subprocess.run(["timeout", "120", *cmd], cwd=repo, capture_output=True, text=True,
                         env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                              "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_a_config_change_is_a_changed_param(tmp_path):
    # this repository's dvc.yaml, its outputs cut to one folder, on the resolved tiny study
    _sh(tmp_path, "git", "init", "-q")
    _sh(tmp_path, str(DVC), "init", "-q")
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dvc["stages"]["study"]["deps"] = ["src"]
    dvc["stages"]["study"]["outs"] = [{"results/tables": {"persist": True}}]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "metrics.json").write_text(json.dumps(
        {"shapes/badnet/default/none/default/shots~0/seed~0": {"ca": 0.5, "asr": 0.9}}))
    cfg = json.loads(json.dumps(resolve(study([ROOT / "tests" / "data" / "tiny.yaml"])),
                                default=str))
    study_json = tmp_path / "results" / "study.json"
    study_json.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    _sh(tmp_path, str(DVC), "commit", "-f", "-q", "study")
    _sh(tmp_path, "git", "add", "-A")
    _sh(tmp_path, "git", "commit", "-qm", "study")
    assert json.loads(_sh(tmp_path, str(DVC), "status", "--json", "study")) == {}
    epochs = cfg["defenses"]["linear_probe"]["epochs"]
    cfg["defenses"]["linear_probe"]["epochs"] = epochs + 1
    study_json.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    status = json.loads(_sh(tmp_path, str(DVC), "status", "--json", "study"))
    assert status == {"study": [{"changed deps": {"results/study.json": {"defenses": "modified"}}}]}
    diff = json.loads(_sh(tmp_path, str(DVC), "params", "diff", "--json"))
    assert diff == {"results/study.json": {"defenses.linear_probe.epochs":
                                           {"old": epochs, "new": epochs + 1, "diff": 1}}}
    shown = json.loads(_sh(tmp_path, str(DVC), "metrics", "show", "--json"))
    assert shown[""]["data"]["results/tables/metrics.json"]["data"] == {
        "shapes/badnet/default/none/default/shots~0/seed~0": {"ca": 0.5, "asr": 0.9}}


@pytest.mark.integration
def test_the_workflow_writes_the_study_it_resolved(tmp_path):
    # a dry run with CLIPBD_STUDY_OUT (what scripts/dvc_*.sh run) writes resolve(study(...))
    out = tmp_path / "study.json"
    res = subprocess.run(
        ["timeout", "300", sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1",
         "--configfile", "tests/data/tiny.yaml", "--config", "seed=3"], cwd=ROOT,
        capture_output=True, text=True,
        env={**os.environ, "CLIPBD_STUDY_OUT": str(out), "PYTHONPATH": str(ROOT / "src")})
    assert res.returncode == 0, res.stderr[-3000:]
    want = resolve(study([ROOT / "tests" / "data" / "tiny.yaml"], {"seed": 3}))
    assert json.loads(out.read_text()) == json.loads(json.dumps(want, default=str))
    assert json.loads(out.read_text())["seed"] == 3
