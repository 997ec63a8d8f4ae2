"""A real SLURM cluster (scripts/slurm_local.sh starts one on this machine; skipped where it
cannot: not root, no apt). The SLURM test study runs through the slurm executor with the cluster
profile's settings, every job goes through sbatch, and the results equal a local run's."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from clipbd.artifacts import load_tensors, read_json
from workflow_util import ROOT, SNAKEMAKE

pytestmark = pytest.mark.slurm

PROFILE = ROOT / "slurm" / "config.yaml"
TEST_PROFILE = ROOT / "tests" / "slurm_profile"
GPU_RULES = {"pretrain", "backdoor", "learn_trigger", "defend", "evaluate", "features", "probe",
             "sup_train", "sup_defend"}


def rule_groups() -> dict[str, str]:
    """rule -> its `group:` in workflow/rules/*.smk (jobs that share SLURM jobs)."""
    text = "\n".join(p.read_text() for p in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    return {rule: m.group(1) for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)",
                                                          text, flags=re.M | re.S)
            if (m := re.search(r"^    group:\n\s+\"(\w+)\"", body, flags=re.M))}


def _profile(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_profile_lines_are_commented_and_test_profile_mirrors_it():
    lines = [ln for ln in PROFILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for line in lines:
        if not line.rstrip().endswith(":"):  # `key: value` lines (not section headers)
            assert " # " in line, f"slurm/config.yaml: no comment on `{line.strip()}`"
    real, test = _profile(PROFILE), _profile(TEST_PROFILE / "config.yaml")
    blocks = re.split(r"^(?=[\w-]+:)", (TEST_PROFILE / "config.yaml").read_text(), flags=re.M)
    marked = {b.split(":")[0] for b in blocks if "# test:" in b}
    assert marked == {"default-resources", "set-resources", "slurm-no-account",
                      "slurm-status-command", "slurm-init-seconds-before-status-checks",
                      "slurm-keep-successful-logs"}
    assert {k: v for k, v in test.items() if k not in marked} == {
        k: v for k, v in real.items() if k not in marked}
    assert set(test["set-resources"]) == set(real["set-resources"]) <= GPU_RULES
    # partition and account live only in the profile, never in the rules
    assert set(real["default-resources"]) == {"slurm_partition", "slurm_account"}
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        assert not re.search(r"slurm_(partition|account)", smk.read_text()), smk
    groups = dict(g.split("=") for g in real["group-components"])
    assert set(groups) == set(rule_groups().values()) == {"evaluate", "fewshot", "trigger", "report"}


@pytest.fixture(scope="module")
def runs(jobcomp, tmp_path_factory) -> dict[str, Path]:
    """The same study twice, side by side: locally and on the cluster (one thread per job,
    so that both compute bit for bit the same)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    modes = {"local": ["--cores", "2"], "slurm": ["--profile", str(TEST_PROFILE)]}
    work, procs = {}, {}
    for mode, args in modes.items():
        work[mode] = tmp_path_factory.mktemp(mode)
        shutil.copy(ROOT / "tests" / "data" / "slurm.yaml", work[mode] / "config.yaml")
        cmd = ["timeout", "-k", "10", "2400", *SNAKEMAKE, "--directory", str(work[mode]),
               "--configfile", str(work[mode] / "config.yaml"), "--max-threads", "1", *args]
        log = open(work[mode] / "snakemake.out", "w")
        procs[mode] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       cwd=work[mode])
    for mode, proc in procs.items():
        rc = proc.wait()
        assert rc == 0, f"{mode} run failed ({rc}):\n" + (work[mode] / "snakemake.out").read_text()[-5000:]
    return work


def planned(out: str) -> dict[str, int]:
    """Rule -> job count from the `Job stats` table a run prints first."""
    table = out.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_every_job_went_through_sbatch(runs, jobcomp):
    work = runs["slurm"]
    logs = work / ".snakemake" / "slurm_logs"
    # SLURM job id -> what it ran: rule_<rule> or group_<group>_<rules>
    jobs = {int(p.stem): p.relative_to(logs).parts[0] for p in logs.rglob("*.log")}
    records = [dict(re.findall(r"(\w+)=(\S*)", ln)) for ln in jobcomp.read_text().splitlines()]
    mine = {int(r["JobId"]): r for r in records if r.get("WorkDir") == str(work)}
    assert jobs and sorted(mine) == sorted(jobs)
    assert {(r["JobState"], r["ExitCode"]) for r in mine.values()} == {("COMPLETED", "0:0")}

    counts = planned((runs["local"] / "snakemake.out").read_text())
    assert counts["evaluate"] == 2 and counts["fewshot"] == 1 and counts["gallery"] == 1
    groups = rule_groups()
    expected = Counter({f"rule_{r}": n for r, n in counts.items() if r not in groups and r != "all"})
    expected.update({f"group_{g}" for r, g in groups.items() if r in counts})
    # one SLURM job per group, e.g. both evaluations in one
    assert Counter(re.sub(r"^(group_[a-z]+)_.*", r"\1", n) for n in jobs.values()) == expected

    gpu_groups = {g for r, g in groups.items() if r in GPU_RULES}
    for jid, name in jobs.items():  # GPU rules asked for the (fake) GPU, the others did not
        show = subprocess.run(["scontrol", "show", "job", "-o", str(jid)], capture_output=True,
                              text=True, timeout=60, check=True).stdout
        group = re.match(r"group_([a-z]+)_", name)
        wants_gpu = group[1] in gpu_groups if group else name.removeprefix("rule_") in GPU_RULES
        assert ("gres:gpu:1" in show) == wants_gpu, (name, show)


def test_results_equal_local_run(runs):
    def files(work: Path) -> list[Path]:
        return sorted(p.relative_to(work) for p in (work / "results").rglob("*") if p.is_file())

    local, slurm = runs["local"], runs["slurm"]
    assert files(local) == files(slurm)
    # one metrics file per evaluated model (results/tables/metrics.json, dvc's, is the summary)
    metrics = [p for p in files(local) if p.name == "metrics.json" and p.parts[1] == "metrics"]
    assert len(metrics) == 2
    for rel in metrics:
        assert read_json(slurm / rel)["metrics"] == read_json(local / rel)["metrics"], rel
    arts = [p for p in files(local) if p.suffix == ".safetensors"]
    assert any("models/backdoor" in str(p) for p in arts)
    for rel in arts:  # bit for bit: every tensor and the header metadata
        (a, meta_a), (b, meta_b) = load_tensors(slurm / rel), load_tensors(local / rel)
        assert meta_a == meta_b and sorted(a) == sorted(b), rel
        assert all(torch.equal(a[k], b[k]) for k in a), rel
    for table in ("results/tables/metrics.csv", "results/tables/metrics.json"):
        assert (slurm / table).read_text() == (local / table).read_text(), table
