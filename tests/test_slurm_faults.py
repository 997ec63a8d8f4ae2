"""Faults on the real local SLURM cluster (scripts/slurm_local.sh, which enforces each job's
memory): a job killed for memory, one killed by its time limit and one cancelled by hand are
each retried by the cluster profile with only the resource that ran out grown, and the run's
log keeps every earlier attempt's cause (clipbd.retry; tests/data/faults/Snakefile)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workflow_util import ROOT

pytestmark = pytest.mark.slurm

FAULTS = ROOT / "tests" / "data" / "faults" / "Snakefile"


@pytest.fixture(scope="module")
def faulty_run(jobcomp, tmp_path_factory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("faults")
    cmd = ["timeout", "-k", "10", "900", sys.executable, "-m", "snakemake", "-s", str(FAULTS),
           "--directory", str(work), "--profile", str(ROOT / "tests" / "slurm_profile")]
    out = open(work / "snakemake.out", "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    jobid_file, deadline = work / "cancel.jobid", time.time() + 300
    while not jobid_file.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(1)
    assert jobid_file.exists(), (work / "snakemake.out").read_text()[-5000:]
    time.sleep(2)  # the job sleeps now; cancel it as a user would
    subprocess.run(["scancel", jobid_file.read_text().strip()], check=True, timeout=60)
    rc = proc.wait()
    text = (work / "snakemake.out").read_text()
    assert rc == 0, text[-5000:]
    return work, text


def test_each_retry_grows_only_what_ran_out(faulty_run):
    work, _ = faulty_run
    got = {r: (work / f"{r}.txt").read_text().split() for r in ("oom", "timeout", "cancel")}
    assert got == {"oom": ["800", "5"],        # mem_mb 400 -> 800, runtime as it was
                   "timeout": ["400", "2"],    # runtime 1 -> 2 minutes, memory as it was
                   "cancel": ["400", "5"]}     # cancelled: nothing grows


def test_slurm_recorded_the_causes_and_the_log_keeps_them(faulty_run, jobcomp):
    work, text = faulty_run
    logs = work / ".snakemake" / "slurm_logs"
    rule_of = {p.stem: p.parent.name.removeprefix("rule_") for p in logs.rglob("*.log")}
    records = [dict(re.findall(r"(\w+)=(\S*)", ln)) for ln in jobcomp.read_text().splitlines()]
    states: dict[str, list[str]] = {}
    for rec in sorted((r for r in records if r.get("WorkDir") == str(work)),
                      key=lambda r: int(r["JobId"])):
        states.setdefault(rule_of[rec["JobId"]], []).append(rec["JobState"])
    # SLURM ends a job its memory polling killed FAILED (a cgroup OOM kill: OUT_OF_MEMORY); its
    # log says why, and clipbd.retry reads it
    assert states == {"oom": ["FAILED", "COMPLETED"], "timeout": ["TIMEOUT", "COMPLETED"],
                      "cancel": ["CANCELLED", "COMPLETED"]}
    oom_log = (logs / "rule_oom" / f"{min(j for j, r in rule_of.items() if r == 'oom')}.log")
    assert re.search(r"exceeded memory limit \(\d+ > 419430400\), being killed", oom_log.read_text())
    first = {r: min((j for j, rr in rule_of.items() if rr == r), key=int) for r in states}
    for rule, (cause, grown) in {"oom": ("OUT_OF_MEMORY", "mem_mb=800"),
                                 "timeout": ("TIMEOUT", "runtime=2"),
                                 "cancel": ("CANCELLED", "mem_mb=400")}.items():
        line = (f"[clipbd retry] {rule} -: attempt 1 (SLURM job {first[rule]}) ended {cause}; "
                f"attempt 2 asks {grown}")
        assert line in text, (line, text[-5000:])
