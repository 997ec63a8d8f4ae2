"""DVC versions the study's artifacts: push after a run, and a clone + pull has nothing to do.

One tiny study is run, pushed with scripts/dvc_push.sh to the default remote (a folder beside
the repository), cloned with git and pulled with scripts/dvc_pull.sh (tests/dvc_util.py).
"""
from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pytest
import yaml

from dvc_util import ROOT, planned, run, versioned

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(tiny):
    return tiny


def digests(repo):
    files = [p for d in versioned(repo) for p in (repo / "results" / d).rglob("*") if p.is_file()]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def lock_outs(repo):
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["study"]["outs"]


class Yaml12Floats(yaml.SafeLoader):
    """dvc.lock's floats as YAML 1.2 reads them: PyYAML's 1.1 rules keep `1e-05` a string."""


Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"),
    list("-+0123456789."))


def test_lock_records_every_versioned_folder(study):
    # every folder the workflow wrote is versioned (a new output folder needs a dvc.yaml entry)
    written = sorted(p.name for p in (study.origin / "results").iterdir() if p.is_dir())
    assert written == versioned(study.origin)
    outs = lock_outs(study.origin)
    assert sorted(o["path"] for o in outs) == [f"results/{d}" for d in versioned(study.origin)]
    for out in outs:
        files = [p for p in (study.origin / out["path"]).rglob("*") if p.is_file()]
        assert out["nfiles"] == len(files) > 0, out["path"]
        assert out["md5"].endswith(".dir")
    # every safetensors artifact comes with its JSON sidecar, both versioned
    arts = [p for p in (study.origin / "results").rglob("*.safetensors")]
    assert arts and all(p.with_name(p.name + ".json").is_file() for p in arts)
    deps = yaml.safe_load((study.origin / "dvc.lock").read_text())["stages"]["study"]["deps"]
    assert sorted(d["path"] for d in deps) == ["Snakefile", "src/clipbd", "workflow"]
    # the config is the resolved study, every key of it, as the workflow saw it
    params = yaml.load((study.origin / "dvc.lock").read_text(), Yaml12Floats)["stages"]["study"][
        "params"]
    resolved = json.loads((study.origin / "results" / "study.json").read_text())
    assert params == {"results/study.json": resolved}
    assert resolved["defenses"]["linear_probe"]["epochs"] == yaml.safe_load(
        (study.origin / "config" / "config.yaml").read_text())["defenses"]["linear_probe"]["epochs"]
    # git keeps the study's config with the lock; the artifacts stay ignored
    tracked = run(study.origin, "git", "ls-files", "results").stdout.split()
    assert tracked == ["results/study.json"]


def test_default_remote_is_the_folder_beside_the_repository(study):
    assert study.remote == study.origin.parent / "clipbd-dvc-remote"
    for out in lock_outs(study.origin):
        md5 = out["md5"]
        assert (study.remote / "files" / "md5" / md5[:2] / md5[2:]).is_file(), out["path"]
    stored = [p for p in (study.remote / "files" / "md5").rglob("*") if p.is_file()]
    assert len(stored) >= sum(o["nfiles"] for o in lock_outs(study.origin))


def test_clone_gets_the_same_artifacts_and_has_nothing_to_do(study):
    assert (study.clone / "dvc.lock").read_text() == (study.origin / "dvc.lock").read_text()
    assert digests(study.clone) == digests(study.origin)
    # nothing ran in the clone: the touch leaves only empty log files
    assert {p.stat().st_size for p in (study.clone / "logs").rglob("*.log")} == {0}
    assert planned(study.clone) == []


def test_push_refuses_an_unfinished_study(study):
    cfg_path = study.origin / "config" / "config.yaml"
    old, lock = cfg_path.read_text(), (study.origin / "dvc.lock").read_text()
    cfg = yaml.safe_load(old)
    cfg["defenses"]["linear_probe"]["epochs"] = 11
    cfg_path.write_text(yaml.safe_dump(cfg))
    try:
        res = run(study.origin, "bash", "scripts/dvc_push.sh", check=False)
    finally:
        cfg_path.write_text(old)
    assert res.returncode == 1
    # the refused push leaves the recorded study config alone (dvc params diff stays empty)
    assert run(study.origin, "git", "status", "--porcelain").stdout == ""
    assert "the workflow has jobs left" in res.stderr and "defend" in res.stderr
    assert (study.origin / "dvc.lock").read_text() == lock


def test_pull_refuses_to_adopt_artifacts_of_other_code(study):
    src = study.clone / "src" / "clipbd" / "metrics.py"
    old = src.read_text()
    src.write_text(old + "\n# an edit\n")
    try:
        res = run(study.clone, "bash", "scripts/dvc_pull.sh", check=False)
    finally:
        src.write_text(old)
    assert res.returncode == 1
    assert "code or config differ from dvc.lock" in res.stderr and "src/clipbd" in res.stderr
    assert planned(study.clone) == []


def test_pull_refuses_artifacts_of_another_config(study):
    # a config edit, or other --config/--configfile arguments than the push's, is a changed
    # param of the study stage: the pull stops before touching anything
    cfg_path = study.clone / "config" / "config.yaml"
    old = cfg_path.read_text()
    cfg = yaml.safe_load(old)
    cfg["defenses"]["linear_probe"]["epochs"] = 11
    cfg_path.write_text(yaml.safe_dump(cfg))
    try:
        res = run(study.clone, "bash", "scripts/dvc_pull.sh", check=False)
    finally:
        cfg_path.write_text(old)
    assert res.returncode == 1
    assert "code or config differ from dvc.lock" in res.stderr
    assert "results/study.json" in res.stderr and "defenses" in res.stderr
    res = run(study.clone, "bash", "scripts/dvc_pull.sh", "--config", "seed=1", check=False)
    assert res.returncode == 1 and "results/study.json" in res.stderr
    # back to the pushed config: the study.json the pull rewrote is git's again
    run(study.clone, "bash", "scripts/dvc_pull.sh", timeout=1200)
    assert run(study.clone, "git", "status", "--porcelain").stdout == ""
    assert planned(study.clone) == []


def test_metrics_and_params_are_dvcs(study):
    shown = json.loads(run(study.origin, "dvc", "metrics", "show", "--json").stdout)
    scores = next(iter(shown.values()))["data"]["results/tables/metrics.json"]["data"]
    table = pd.read_csv(study.origin / "results" / "tables" / "metrics.csv")
    assert len(scores) == len(table) > 0
    row = table.iloc[0]
    key = row["source"].removeprefix("results/metrics/").removesuffix("/metrics.json")
    assert scores[key]["asr"] == pytest.approx(row["asr"])
    assert run(study.origin, "dvc", "params", "diff").stdout.strip() == ""


def test_remote_is_overridden_by_the_local_config(study):
    other = study.origin.parent / "other-remote"
    run(study.origin, "dvc", "remote", "modify", "--local", "artifacts", "url", str(other))
    try:
        run(study.origin, "bash", "scripts/dvc_push.sh")
    finally:
        (study.origin / ".dvc" / "config.local").unlink()
    assert sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file()) == sorted(
        p.relative_to(study.remote) for p in study.remote.rglob("*") if p.is_file())
    assert run(study.origin, "git", "status", "--porcelain").stdout == ""  # config.local ignored


def test_no_dvc_command_inside_a_job():
    verbs = "add|commit|push|pull|fetch|checkout|repro|gc"
    calls = re.compile(rf"\bdvc\s+({verbs})\b|import dvc|from dvc")
    files = [ROOT / "Snakefile", *(ROOT / "workflow").rglob("*"), *(ROOT / "src").rglob("*.py")]
    hits = [str(f) for f in files if f.is_file() and calls.search(f.read_text(errors="ignore"))]
    assert hits == []
