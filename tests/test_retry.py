"""Retries grow the resource that ran out (clipbd.retry), on hand-made SLURM job logs; the real
cluster's out-of-memory, time-limit and cancel paths are in tests/test_slurm_faults.py."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from clipbd import retry
from workflow_util import ROOT, SNAKEMAKE

# job ids no local test cluster has run, so SLURM itself knows nothing of them
IDS = ("990000001", "990000002", "990000003")
TIME_LIMIT = "slurmstepd: error: *** JOB {id} ON node CANCELLED AT 2026-12-01T10:00:00 DUE TO TIME LIMIT ***"
OOM = "slurmstepd: error: Detected 1 oom-kill event(s) in StepId={id}.batch."
OVER = "slurmstepd: error: Step {id}.0 exceeded memory limit (612000 > 307200), being killed"
CANCEL = "slurmstepd: error: *** JOB {id} ON node CANCELLED AT 2026-12-01T10:00:00 ***"


def logs(tmp_path: Path, rule: str, wildcards: list[str], texts: list[str]) -> Path:
    folder = tmp_path / f"rule_{rule}" / retry.wildcard_dir(wildcards)
    folder.mkdir(parents=True)
    for jid, text in zip(IDS, texts):
        (folder / f"{jid}.log").write_text(f"host: node\n{text.format(id=jid)}\n")
    return tmp_path


@pytest.mark.parametrize("text, state", [(TIME_LIMIT, "TIMEOUT"), (OOM, "OUT_OF_MEMORY"),
                                         (OVER.replace("exceeded", "Exceeded job"), "OUT_OF_MEMORY"),
                                         (CANCEL, "CANCELLED"), ("Traceback ...", retry.UNKNOWN)])
def test_state_from_the_log_when_slurm_has_forgotten_the_job(tmp_path, text, state):
    log = tmp_path / f"{IDS[0]}.log"
    log.write_text(text.format(id=IDS[0]))
    assert retry.state_of(IDS[0], log) == state


def test_a_failed_job_whose_log_says_memory_ran_out_counts_as_out_of_memory(tmp_path, monkeypatch):
    log = tmp_path / "1.log"
    log.write_text(OVER.format(id=IDS[0]) + "\nslurmstepd: error: Exceeded job memory limit\n")
    monkeypatch.setattr(retry, "_run", lambda cmd: "FAILED\n" if cmd[0] == "sacct" else "")
    assert retry.state_of(IDS[0], log) == "OUT_OF_MEMORY"
    log.write_text("Traceback (most recent call last):\nValueError\n")
    assert retry.state_of(IDS[0], log) == "FAILED"  # a failed command stays FAILED
    monkeypatch.setattr(retry, "_run", lambda cmd: "JobState=CANCELLED Reason=None"
                        if cmd[0] == "scontrol" else "")
    log.write_text(OVER.format(id=IDS[0]))
    assert retry.state_of(IDS[0], log) == "CANCELLED"  # SLURM's word first


def test_each_resource_grows_only_with_its_own_cause():
    assert retry.factor("mem_mb", 1, []) == retry.factor("runtime", 1, []) == 1
    oom, timeout = ["OUT_OF_MEMORY"], ["TIMEOUT"]
    assert (retry.factor("mem_mb", 2, oom), retry.factor("runtime", 2, oom)) == (2, 1)
    assert (retry.factor("mem_mb", 2, timeout), retry.factor("runtime", 2, timeout)) == (1, 2)
    for other in ("CANCELLED", "NODE_FAIL", "PREEMPTED", "FAILED", "BOOT_FAIL"):
        assert retry.factor("mem_mb", 2, [other]) == retry.factor("runtime", 2, [other]) == 1
    assert retry.factor("mem_mb", 3, ["OUT_OF_MEMORY"] * 2) == 4
    assert retry.factor("mem_mb", 3, ["TIMEOUT", "OUT_OF_MEMORY"]) == 2
    assert retry.factor("runtime", 3, ["DEADLINE", "CANCELLED"]) == 2
    # no record of the earlier attempts (a local run): both grow with the attempt, as before
    assert retry.factor("mem_mb", 3, []) == retry.factor("runtime", 3, []) == 3
    assert retry.factor("mem_mb", 2, [retry.UNKNOWN]) == 2


def test_scaled_reads_the_earlier_attempts_of_its_own_job(tmp_path):
    said = []
    retries = retry.Retries(logs(tmp_path, "backdoor", ["fmnist", "ssba/x"],
                                 [TIME_LIMIT, CANCEL, OOM]), said.append)
    mem = retry.scaled(8000, "mem_mb", retries=retries)
    runtime = retry.scaled(120, "runtime", retries=retries)
    for f in (mem, runtime):
        f.rule = "backdoor"
    wc = ["fmnist", "ssba/x"]
    # attempt 2 follows the newest log only (job 3: oom); attempt 3 the two newest
    assert (mem(wc, 1), runtime(wc, 1)) == (8000, 120)
    assert (mem(wc, 2), runtime(wc, 2)) == (16000, 120)
    assert (mem(wc, 3), runtime(wc, 3)) == (16000, 120)  # cancelled, then oom
    assert (mem(wc, 4), runtime(wc, 4)) == (16000, 240)  # + the time limit of job 1
    assert said[0] == (f"[clipbd retry] backdoor fmnist_ssba_x: attempt 1 (SLURM job {IDS[2]}) "
                       "ended OUT_OF_MEMORY; attempt 2 asks mem_mb=16000")
    assert len(said) == 6  # once per attempt > 1 and resource, however often snakemake asks
    mem(wc, 2)
    assert len(said) == 6
    # another job of the rule, and a rule without logs: no cause known
    assert mem(["fmnist", "badnet"], 2) == 16000 and runtime(["fmnist", "badnet"], 3) == 360
    assert "cause unknown" in said[-1]


def test_inside_the_retried_job_its_own_log_is_not_an_earlier_attempt(tmp_path, monkeypatch):
    """The job's own snakemake evaluates the resources again, with the same attempt number,
    while its own log (a newer job id) already exists: it must see the same earlier attempt."""
    logdir = logs(tmp_path, "oom", [], [OOM, "host: node\nrunning"])
    monkeypatch.setenv("SLURM_JOB_ID", IDS[1])
    assert retry.earlier_attempts("oom", [], 2, logdir) == [(IDS[0], "OUT_OF_MEMORY")]
    monkeypatch.delenv("SLURM_JOB_ID")
    assert retry.earlier_attempts("oom", [], 2, logdir) == [(IDS[1], retry.UNKNOWN)]


def test_input_sized_memory_grows_from_its_first_ask():
    class Input:
        size_mb = 5000

    mem = retry.scaled(4000, "mem_mb", input_factor=2, retries=retry.Retries(Path("/nonexistent")))
    assert mem([], Input(), 1) == 10000 and mem([], Input(), 2) == 20000
    Input.size_mb = 10
    assert mem([], Input(), 1) == 4000


def test_every_rule_resource_is_a_retry_function_bound_to_its_rule(tmp_path):
    """The workflow's mem_mb and runtime all go through memory()/minutes(); the Snakefile binds
    each to its rule, so a real (dry) retry of `pretrain` after a time limit asks for twice its
    runtime and the same memory, while a job with no SLURM record grows both."""
    rules = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    asks = re.findall(r"^\s+(mem_mb|runtime)=(\w+)\(", rules, flags=re.M)
    assert len(asks) > 40 and {f for _, f in asks} == {"memory", "minutes"}
    assert all((r == "mem_mb") == (f == "memory") for r, f in asks)
    logs(tmp_path / ".snakemake" / "slurm_logs", "pretrain", [], [TIME_LIMIT])
    out = subprocess.run(
        [*SNAKEMAKE, "--configfile", str(ROOT / "tests" / "data" / "tiny.yaml"), "--cores", "1",
         "-n", "--directory", str(tmp_path), "--attempt", "2", "results/models/clean/model.safetensors"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    asked = dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", text, flags=re.M))
    pretrain = dict(kv.split("=", 1) for kv in asked["pretrain"].split(", "))
    data = dict(kv.split("=", 1) for kv in asked["prepare_data"].split(", "))
    assert (pretrain["runtime"], pretrain["mem_mb"]) == ("240", "8000")  # base 120 min, 8000 MB
    assert (data["runtime"], data["mem_mb"]) == ("60", "16000")  # no record: 2x both (30, 8000)
    assert (f"[clipbd retry] pretrain -: attempt 1 (SLURM job {IDS[0]}) ended TIMEOUT; "
            "attempt 2 asks runtime=240") in text
