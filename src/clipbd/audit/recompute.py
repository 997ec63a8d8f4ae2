"""`audit --recompute ARTIFACT ...`: rebuild artifacts in a scratch directory and compare their
sha256 with the one each sidecar recorded.

How a job is rebuilt: Snakemake plans it in the audited root (`snakemake -n -p --force
ARTIFACT`, a dry run: nothing is written there) and prints the exact shell command it would
run with the current code and config. That job's input files are hard-linked (or copied) into
a scratch directory at the same relative paths, the root's other top-level entries (config
files, local data) are linked beside them, and the command runs there. So the rebuild is the
workflow's own job, not a re-implementation of it, and it reads only the job's direct inputs.
(Running Snakemake itself in a scratch copy would rebuild every ancestor, since it rebuilds
missing intermediates; rebuilding the CLI call from the sidecar would duplicate the rules.)
The command carries the current code fingerprint and config, so `reproduced` means: the
current code and config, from the recorded inputs, give the recorded bytes.

Results: `reproduced` (the same sha256), `equivalent` (a metrics JSON whose only difference is
the wall time it records about itself), `differs`, `failed` (the job could not be planned or
failed; its log's tail is kept).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from clipbd.artifacts import read_json, sha256_file, sidecar_path

RESULTS = ("reproduced", "equivalent", "differs", "failed")
VOLATILE = ("wall_time_s",)  # what a metrics JSON records about its own run


def default_snakefile(root: Path) -> Path | None:
    """The root's Snakefile, else the one of the source tree clipbd is imported from."""
    for p in (root / "Snakefile", Path(__file__).resolve().parents[3] / "Snakefile"):
        if p.is_file():
            return p
    return None


def plan(root: Path, targets: list[str], snakefile: Path, configfile: str | None) -> dict:
    """target -> {"rule", "input", "output", "log", "shell"} of the job Snakemake would run."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(root),
           "-n", "-p", "--nolock", "--force", "--cores", "1", *targets]
    profile = snakefile.parent / "workflow" / "profiles" / "default"
    if profile.is_dir():
        cmd[5:5] = ["--workflow-profile", str(profile)]
    if configfile:
        cmd[5:5] = ["--configfile", str(configfile)]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"snakemake could not plan {' '.join(targets)}: "
                           f"{(res.stderr or res.stdout).strip()[-1500:]}")
    jobs = parse_dry_run(res.stdout + "\n" + res.stderr)
    return {t: j for j in jobs for t in targets if t in j["output"]}


def parse_dry_run(text: str) -> list[dict]:
    """Jobs of `snakemake -n -p` output (Snakemake 9): a `rule NAME:` block of `key: value`
    lines, closed by the job's `Shell command: ...` line."""
    jobs, job = [], None
    for line in text.splitlines():
        head = re.match(r"^\s*(?:local)?rule (\w+):$", line)
        if head:
            job = {"rule": head.group(1), "input": [], "output": [], "log": [], "shell": ""}
            jobs.append(job)
        elif job is not None:
            field = re.match(r"^\s+(input|output|log): (.*)$", line)
            shell = re.match(r"^\s*Shell command: (.*)$", line)
            if field:
                job[field.group(1)] = [p.strip() for p in field.group(2).split(", ") if p.strip()]
            elif shell:
                job["shell"], job = shell.group(1).strip(), None
    return [j for j in jobs if j["shell"]]


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem: copy (keeps the stat the sidecar recorded)
        shutil.copy2(src, dst)


def scratch_for(root: Path, job: dict, scratch: Path) -> None:
    """The job's relative inputs (and their sidecars) in `scratch`; other top-level entries
    of the root linked beside them, except those the job writes into."""
    written = {Path(p).parts[0] for p in job["output"] + job["log"]}
    for p in job["input"]:
        if Path(p).is_absolute():
            continue  # local weights, raw data outside the study: read in place
        written.add(Path(p).parts[0])
        if (root / p).is_dir():  # an image folder kept in the study: read in place
            (scratch / p).parent.mkdir(parents=True, exist_ok=True)
            (scratch / p).symlink_to((root / p).resolve())
            continue
        for f in (Path(p), sidecar_path(p)):
            if (root / f).is_file():
                _place(root / f, scratch / f)
    for entry in root.iterdir():
        if entry.name not in written and entry.name != ".snakemake":
            (scratch / entry.name).symlink_to(entry.resolve())
    for p in job["log"]:
        (scratch / p).parent.mkdir(parents=True, exist_ok=True)


def run_job(job: dict, scratch: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep +
           os.environ.get("PATH", "")}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", job["shell"]], cwd=scratch,
                          env=env, capture_output=True, text=True)


def _equivalent(a: Path, b: Path) -> bool:
    """Two metrics JSON files equal up to the wall time each records of itself."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
        return obj

    try:
        return strip(json.loads(a.read_text())) == strip(json.loads(b.read_text()))
    except (ValueError, OSError):
        return False


def recompute(root: Path, targets: list[str], snakefile: Path | None,
              configfile: str | None, keep: bool = False) -> list[dict]:
    """One row per target: path, result, recorded / rebuilt sha256, rule, reason."""
    rows = []
    try:
        if snakefile is None:
            raise RuntimeError("no Snakefile found (pass --snakefile)")
        jobs = plan(root, targets, snakefile, configfile)
    except RuntimeError as err:
        return [{"path": t, "result": "failed", "reason": str(err)} for t in targets]
    for t in targets:
        rows.append(_one(root, t, jobs.get(t), keep))
    return rows


def _one(root: Path, target: str, job: dict | None, keep: bool) -> dict:
    row = {"path": target, "result": "failed", "recorded": None, "rebuilt": None}
    try:
        row["recorded"] = read_json(sidecar_path(root / target)).get("sha256")
    except (OSError, ValueError):
        row["reason"] = "no readable sidecar: nothing recorded to compare with"
        return row
    if job is None:
        row["reason"] = "snakemake planned no job writing it (not a workflow output?)"
        return row
    row["rule"] = job["rule"]
    scratch = Path(tempfile.mkdtemp(prefix="clipbd-recompute-"))
    try:
        scratch_for(root, job, scratch)
        res = run_job(job, scratch)
        out = scratch / target
        if res.returncode != 0 or not out.is_file():
            logs = " ".join((scratch / p).read_text()[-1500:] for p in job["log"]
                            if (scratch / p).is_file())
            row["reason"] = (f"job exited {res.returncode}: "
                             f"{(res.stderr + logs).strip()[-1500:]}")
            return row
        row["rebuilt"] = sha256_file(out)
        if row["rebuilt"] == row["recorded"]:
            row["result"], row["reason"] = "reproduced", "same sha256"
        elif target.endswith(".json") and (root / target).is_file() and \
                sha256_file(root / target) == row["recorded"] and _equivalent(out, root / target):
            row["result"] = "equivalent"
            row["reason"] = "same content; only the wall time it records of itself differs"
        else:
            row["result"] = "differs"
            row["reason"] = (f"rebuilt sha256 {row['rebuilt'][:12]} != recorded "
                             f"{str(row['recorded'])[:12]}")
        return row
    finally:
        if keep:
            row["scratch"] = str(scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
