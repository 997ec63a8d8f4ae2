"""Per-job overhead of the SLURM executor against local execution, on trivial jobs.

A throw-away Snakefile with N independent `echo` jobs runs, one job at a time:
  local    `snakemake --cores 1`
  slurm    `--executor slurm --jobs 1`: N sbatch jobs
  grouped  the same with all N jobs in one group (`--groups` + `--group-components`): 1 sbatch job
           (`--cores 1`: the jobs of the group run one after another inside it)
Each mode also runs with a single job; (T_N - T_1) / (N - 1) is the marginal cost of one job,
without the fixed start-up. The SLURM job records (jobcomp) split the SLURM cost into time
inside the job (the job step starts snakemake again) and the rest (queueing, status polling).

Needs the local cluster of scripts/slurm_local.sh (root; it is started if needed).
    python benchmarks/slurm_overhead.py [--jobs 6] [--out results/benchmarks/slurm_overhead.json]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = """
N = int(config["count"])
rule all:
    input: expand("out/{i}.txt", i=range(N))
rule trivial:
    output: "out/{i}.txt"
    resources: mem_mb=100, runtime=5
    shell: "echo {wildcards.i} > {output}"
"""
SLURM = ["--executor", "slurm", "--jobs", "1", "--slurm-no-account",
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"]
MODES = {"local": ["--cores", "1"], "slurm": SLURM,
         "grouped": [*SLURM, "--cores", "1", "--groups", "trivial=g", "--group-components", "g=1000"]}


def run(mode: str, n: int, base: Path) -> tuple[float, Path]:
    work = Path(tempfile.mkdtemp(prefix=f"{mode}{n}_", dir=base))
    (work / "Snakefile").write_text(SNAKEFILE)
    cmd = ["timeout", "-k", "10", "900", sys.executable, "-m", "snakemake", "--directory",
           str(work), "--config", f"count={n}", *MODES[mode]]
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"{mode} with {n} jobs failed:\n{res.stderr[-3000:]}")
    return wall, work


def in_job_seconds(jobcomp: Path, work: Path) -> list[float]:
    """Start-to-end seconds of every SLURM job that ran in `work` (1 s resolution)."""
    out = []
    for line in jobcomp.read_text().splitlines():
        rec = dict(re.findall(r"(\w+)=(\S*)", line))
        if rec.get("WorkDir") == str(work):
            start, end = (datetime.fromisoformat(rec[k]) for k in ("StartTime", "EndTime"))
            out.append((end - start).total_seconds())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=6, help="trivial jobs per run (default 6)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "slurm_overhead.json")
    args = ap.parse_args()
    n = args.jobs
    start = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_local.sh")], capture_output=True, text=True)
    if start.returncode != 0:
        sys.exit(start.stderr.strip() or start.stdout)
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    jobcomp = Path(re.search(r"^JobCompLoc\s*=\s*(\S+)", conf, flags=re.M).group(1))

    result = {"jobs": n, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="slurm_overhead_") as tmp:
        for mode in MODES:
            t1, _ = run(mode, 1, Path(tmp))
            tn, work = run(mode, n, Path(tmp))
            entry = {"wall_1_s": round(t1, 2), f"wall_{n}_s": round(tn, 2),
                     "per_job_s": round((tn - t1) / (n - 1), 2)}
            if mode != "local":
                inside = in_job_seconds(jobcomp, work)
                entry.update(sbatch_jobs=len(inside), inside_jobs_s=sum(inside))
            result["modes"][mode] = entry
            print(f"{mode:8s} 1 job {t1:6.1f} s   {n} jobs {tn:6.1f} s   per job {entry['per_job_s']:5.1f} s"
                  + (f"   ({entry['sbatch_jobs']} sbatch jobs, {entry['inside_jobs_s']:.0f} s inside them)"
                     if mode != "local" else ""), flush=True)
    local = max(result["modes"]["local"]["per_job_s"], 0.01)
    for mode in ("slurm", "grouped"):
        ratio = result["modes"][mode]["per_job_s"] / local
        result[f"{mode}_over_local"] = round(ratio, 1)
        print(f"per-job overhead {mode} / local: {ratio:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
