"""`python -m clipbd audit` on a real (tiny) workflow run: intact, then one tamper per case.

The study: conftest.py's `micro` (workflow_util.MICRO: synthetic shapes, BadNet, defenses
none, FT, VPT and RVPT), run once per test process and shared with test_report_workflow and
test_determinism; each test audits a copy of it. The chain audited is table -> metrics -> FT
delta -> backdoored model -> poisoned data + trigger -> clean model -> splits.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from clipbd import cli
from clipbd.artifacts import read_json, sidecar_path, write_json
from workflow_util import MICRO, snakemake

pytestmark = pytest.mark.integration

STUDY = MICRO
R = "results"
BACKDOOR = f"{R}/models/backdoor/shapes/badnet/default/seed~0/model.safetensors"
CLEAN = f"{R}/models/clean/model.safetensors"
TRIGGER = f"{R}/triggers/shapes/badnet/default/seed~0/trigger.safetensors"
POISONED = f"{R}/poisoned/shapes/badnet/default/seed~0/train.safetensors"
FEWSHOT = f"{R}/data/shapes/fewshot/shots~2/seed~0.json"
DELTA = f"{R}/defenses/shapes/badnet/default/ft/default/shots~2/seed~0/delta.safetensors"
METRICS = f"{R}/metrics/shapes/badnet/default/ft/default/shots~2/seed~0/metrics.json"
TABLE = f"{R}/tables/metrics.csv"
CHAIN = [TABLE, METRICS, DELTA, BACKDOOR, POISONED, TRIGGER, CLEAN, FEWSHOT,
         f"{R}/data/shapes/train.safetensors", f"{R}/data/shapes/test.safetensors"]


@pytest.fixture
def copy(micro, tmp_path):
    """The shared micro study's files (not its Snakemake state), for this test to tamper with."""
    dst = tmp_path / "study"
    shutil.copytree(micro, dst, ignore=shutil.ignore_patterns(".snakemake"))
    return dst


def audit(root, config=None):
    cfg = root / "config.yaml"
    if config is not None:
        cfg = root / "other.yaml"
        cfg.write_text(yaml.safe_dump(config))
    rc = cli.main(["audit", "--root", str(root), "--configfile", str(cfg),
                   "--out-dir", str(root / R / "audit")])
    report = read_json(root / R / "audit" / "audit.json")
    return rc, {a["path"]: a for a in report["artifacts"]}, report


def flip_byte(path, offset=-5):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_intact_study_is_ok(copy):
    rc, arts, report = audit(copy)
    assert rc == 0
    bad = {p: a["reasons"] for p, a in arts.items() if a["status"] != "ok"}
    assert bad == {}
    assert set(CHAIN) <= set(arts)
    assert {"aggregate", "figure", "gallery", "evaluate", "defend", "backdoor", "poison",
            "poison_test", "trigger", "pretrain", "prepare", "fewshot"} <= {a["step"] for a in arts.values()}
    assert {BACKDOOR, DELTA} <= set(arts[METRICS]["inputs"])
    assert set(arts[BACKDOOR]["inputs"]) == {CLEAN, POISONED}
    assert report["dvc"]["text"] == "dvc: not initialised"
    assert (copy / R / "audit" / "audit.md").read_text().startswith("# Audit of")
    rows = (copy / R / "audit" / "audit.csv").read_text().splitlines()
    assert rows[0] == "path,step,status,reasons,inputs,used_by" and len(rows) == len(arts) + 1


def test_modified_checkpoint(copy):
    flip_byte(copy / BACKDOOR)
    rc, arts, _ = audit(copy)
    assert rc == 1
    assert arts[BACKDOOR]["status"] == "modified"
    assert arts[DELTA]["status"] == "stale"  # made from the checkpoint as it was
    assert any(r.startswith(f"stale: input {BACKDOOR} changed") for r in arts[METRICS]["reasons"])
    assert arts[CLEAN]["status"] == "ok"


def test_missing_artifact(copy):
    (copy / FEWSHOT).unlink()
    rc, arts, _ = audit(copy)
    assert rc == 1
    assert arts[FEWSHOT]["status"] == "missing"
    assert arts[FEWSHOT]["reasons"] == ["missing: file not found"]
    assert DELTA in arts[FEWSHOT]["used_by"]


def test_missing_sidecar(copy):
    sidecar_path(copy / CLEAN).unlink()
    rc, arts, _ = audit(copy)
    assert rc == 1
    assert arts[CLEAN]["status"] == "missing"
    assert "no provenance sidecar" in arts[CLEAN]["reasons"][0]


def test_edited_table_number(copy):
    lines = (copy / TABLE).read_text().splitlines()
    head = lines[0].split(",")
    row = lines[1].split(",")
    row[head.index("ca")] = "0.999"
    (copy / TABLE).write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    rc, arts, _ = audit(copy)
    assert rc == 1
    reasons = arts[TABLE]["reasons"]
    assert arts[TABLE]["status"] == "modified"
    assert any("`ca` is 0.999 in the table" in r for r in reasons)


def test_edited_metrics_json(copy):
    doc = read_json(copy / METRICS)
    doc["metrics"]["asr"] = 0.123456  # no tiny model lands on exactly this
    (copy / METRICS).write_text(json.dumps(doc))
    rc, arts, _ = audit(copy)
    assert rc == 1
    assert arts[METRICS]["status"] == "modified"
    assert arts[TABLE]["status"] == "modified"  # its asr no longer matches the source


def test_config_change_makes_stale(copy):
    cfg = json.loads(json.dumps(STUDY))
    cfg["backdoor"]["steps"] = 5
    rc, arts, report = audit(copy, cfg)
    assert rc == 3  # stale only: rerun the workflow
    assert "Verdict: NOT OK (exit 3)" in (copy / R / "audit" / "audit.md").read_text()
    stale = {p for p, a in arts.items() if a["status"] == "stale"}
    assert {BACKDOOR, TRIGGER, POISONED} <= stale
    assert "stale: config `backdoor` differs from the current config" in arts[BACKDOOR]["reasons"]
    assert arts[CLEAN]["status"] == "ok" and arts[FEWSHOT]["status"] == "ok"


def test_other_code_is_stale(copy):
    side = read_json(sidecar_path(copy / DELTA))
    side["code"] = "0" * 16  # as written by another version of the sources
    write_json(sidecar_path(copy / DELTA), side)
    rc, arts, _ = audit(copy)
    assert rc == 3
    assert arts[DELTA]["status"] == "stale"
    assert arts[DELTA]["reasons"][0].startswith("stale: code fingerprint 0000000000000000 != current")


def test_rebuilt_parent_makes_children_stale(copy):
    """A trigger rebuilt with its own (matching) sidecar: intact itself, its children stale."""
    from clipbd.artifacts import save_tensors, sha256_file
    import torch

    save_tensors(copy / TRIGGER, {"pattern": torch.zeros(3, 3, 3)}, {"attack": "badnet"})
    side = read_json(sidecar_path(copy / TRIGGER))
    side["sha256"] = sha256_file(copy / TRIGGER)
    write_json(sidecar_path(copy / TRIGGER), side)
    rc, arts, _ = audit(copy)
    assert rc == 3
    assert arts[TRIGGER]["status"] == "ok"
    assert arts[POISONED]["status"] == "stale"


def test_dvc_status_when_initialised(copy):
    dvc = shutil.which("dvc") or str(__import__("pathlib").Path(sys.executable).parent / "dvc")
    init = subprocess.run([dvc, "init", "--no-scm"], cwd=copy, capture_output=True, text=True)
    if init.returncode != 0:
        pytest.skip(f"dvc not usable here: {init.stderr[-300:]}")
    rc, _, report = audit(copy)
    assert rc == 0
    assert report["dvc"]["state"] == "clean" and report["dvc"]["text"] == "dvc: up to date"


def test_cli_exit_status_and_snakemake_rule(copy):
    cmd = [sys.executable, "-m", "clipbd", "audit", "--root", ".", "--configfile", "config.yaml"]
    ok = subprocess.run(cmd, cwd=copy, capture_output=True, text=True)
    assert ok.returncode == 0 and "0 stale, 0 modified, 0 missing" in ok.stdout
    assert "Verdict: ok (exit 0)." in ok.stdout
    res = snakemake(copy, "audit", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    flip_byte(copy / POISONED)
    bad = subprocess.run(cmd, cwd=copy, capture_output=True, text=True)
    assert bad.returncode == 1 and f"| modified | {POISONED} |" in bad.stdout
    assert "Verdict: NOT OK (exit 1): 1 modified" in bad.stderr
    res = snakemake(copy, "audit", timeout=600)
    assert res.returncode != 0
    assert f"| modified | {POISONED} |" in res.stdout + res.stderr


def test_nothing_built_reports_the_table_missing(tmp_path):
    rc = cli.main(["audit", "--root", str(tmp_path), "--out-dir", str(tmp_path / "audit")])
    report = read_json(tmp_path / "audit" / "audit.json")
    assert rc == 1
    assert [(a["path"], a["status"]) for a in report["artifacts"]] == [(TABLE, "missing")]


# ---- audit --recompute: the job rebuilt in a scratch directory, sha256 compared ----


def recompute(root, *paths, config=None):
    cfg = root / "config.yaml"
    if config is not None:
        cfg = root / "other.yaml"
        cfg.write_text(yaml.safe_dump(config))
    rc = cli.main(["audit", "--root", str(root), "--configfile", str(cfg),
                   "--out-dir", str(root / R / "audit"), "--recompute", *paths])
    report = read_json(root / R / "audit" / "audit.json")
    return rc, {r["path"]: r for r in report["recompute"]}, report


def test_recompute_reproduces_cheap_artifacts(copy):
    before = {p: (copy / p).read_bytes() for p in (TRIGGER, FEWSHOT, METRICS)}
    rc, rows, _ = recompute(copy, TRIGGER, FEWSHOT, METRICS)
    assert rc == 0
    assert {p: r["result"] for p, r in rows.items()} == {
        TRIGGER: "reproduced", FEWSHOT: "reproduced", METRICS: "equivalent"}
    assert rows[TRIGGER]["rebuilt"] == read_json(sidecar_path(copy / TRIGGER))["sha256"]
    assert rows[TRIGGER]["rule"] == "trigger" and rows[FEWSHOT]["rule"] == "fewshot"
    assert {p: (copy / p).read_bytes() for p in before} == before  # the root is untouched
    md = (copy / R / "audit" / "audit.md").read_text()
    assert f"| reproduced | {TRIGGER} | same sha256 |" in md


def test_recompute_tampered_hash_differs(copy):
    side = read_json(sidecar_path(copy / FEWSHOT))
    side["sha256"] = "f" * 64
    write_json(sidecar_path(copy / FEWSHOT), side)
    rc, rows, _ = recompute(copy, FEWSHOT)
    assert rc == 1  # the file no longer matches its sidecar: modified wins
    assert rows[FEWSHOT]["result"] == "differs"
    assert rows[FEWSHOT]["reason"].endswith("!= recorded ffffffffffff")


def test_recompute_with_another_config_differs(copy):
    cfg = json.loads(json.dumps(STUDY))
    cfg["attacks"]["badnet"]["patch_size"] = 5  # the trigger job now draws another pattern
    rc, rows, report = recompute(copy, TRIGGER, config=cfg)
    assert rc == 4
    assert rows[TRIGGER]["result"] == "differs"
    assert rows[TRIGGER]["rebuilt"] != rows[TRIGGER]["recorded"]
    assert report["summary"]["modified"] == 0 and report["summary"]["stale"] > 0


def test_recompute_of_something_no_job_writes_fails(copy):
    rc, rows, _ = recompute(copy, "results/nothing.json")
    assert rc == 4 and rows["results/nothing.json"]["result"] == "failed"


# ---- a complete run with imported weights is ok (issue 17) ----


def test_imported_clean_models_are_ok(tmp_path):
    import hashlib

    import torch

    from clipbd import audit as A, config
    from clipbd.models import clip

    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    clip.save_checkpoint(weights, clip.create("clipbd-tiny-vit"), "clipbd-tiny-vit")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    cfg = json.loads(json.dumps(STUDY))
    cfg["model"] = {"arch": "clipbd-tiny-vit", "weights": str(weights), "sha256": sha}
    cfg["models"] = {"second": {"arch": "clipbd-tiny-vit", "weights": str(weights),
                                "sha256": sha}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    clean = [CLEAN, f"{R}/models/clean/second/model.safetensors"]
    res = snakemake(tmp_path, *clean, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    current = config.load(tmp_path / "config.yaml")
    report = A.audit(tmp_path, current, tables=clean)
    assert {a["path"]: (a["status"], a["reasons"]) for a in report["artifacts"]} == {
        CLEAN: ("ok", []), clean[1]: ("ok", []), str(weights): ("ok", [])}
    current["models"]["second"]["sha256"] = "0" * 64  # now other weights
    report = A.audit(tmp_path, current, tables=clean)
    arts = {a["path"]: a for a in report["artifacts"]}
    assert arts[clean[1]]["reasons"] == [
        "stale: config `models.second` differs from the current config"]
    assert arts[CLEAN]["status"] == "ok"
