"""Benchmark: how fast the DAG of the full paper grid builds (`snakemake -n`), jobs per rule.

Runs the real `snakemake -n --config plan_only=true` on config/paper.yaml (no dataset or
weight needed) in a scratch directory, `--repeat` times, and also times the in-process part
(config validation + grid expansion) to show where the time goes. Prints the figures and
writes them as JSON (default results/benchmarks/dag.json).

    python benchmarks/dag.py [--config config/paper.yaml] [--repeat 3] [--profile slurm]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def dry_run(config: Path, profile: str | None) -> tuple[float, float, dict[str, int], str]:
    with tempfile.TemporaryDirectory(prefix="clipbd-dag-") as work:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
               "--directory", work, "--configfile", str(config), "-n", "--cores", "1",
               "--config", "plan_only=true", "--quiet", "rules"]
        if profile:  # a profile folder of the repository (slurm/) is found from any cwd
            found = ROOT / profile
            cmd[cmd.index("-n"):cmd.index("-n")] = ["--profile",
                                                     str(found) if found.is_dir() else profile]
        else:
            cmd[cmd.index("-n"):cmd.index("-n")] = ["--workflow-profile",
                                                     str(ROOT / "workflow/profiles/default")]
        t0, c0 = time.perf_counter(), _child_cpu()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
        wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
    out = res.stdout + res.stderr
    if res.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{out[-4000:]}")
    table = out.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}
    return wall, cpu, jobs, " ".join(cmd)


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def in_process(config: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    from clipbd import config as cfgmod, grid  # imports torch and open_clip via the registries

    t1 = time.perf_counter()
    cfg = cfgmod.resolve(cfgmod.study([config], {"plan_only": True}))  # as the Snakefile reads it
    t2 = time.perf_counter()
    runs = grid.expand(cfg)
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "resolve_s": t2 - t1, "expand_s": t3 - t2, "runs": len(runs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", default=None, help="e.g. slurm (default: the workflow profile)")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/dag.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parts = in_process(args.config.resolve())
    walls, cpus, jobs, cmd = [], [], {}, ""
    for _ in range(args.repeat):
        wall, cpu, jobs, cmd = dry_run(args.config.resolve(), args.profile)
        walls.append(wall)
        cpus.append(cpu)
    total = sum(n for k, n in jobs.items())
    med = statistics.median(walls)
    result = {"config": str(args.config), "command": cmd, "profile": args.profile,
              "jobs_per_rule": jobs, "jobs_total": total, "runs": parts["runs"],
              "dry_run_wall_s": [round(w, 2) for w in walls], "dry_run_median_s": round(med, 2),
              "dry_run_cpu_s": [round(c, 2) for c in cpus],
              "load_average_1min": round(os.getloadavg()[0], 2),
              "jobs_per_s": round(total / med, 1), "ms_per_job": round(1000 * med / total, 2),
              "in_process_s": {k: round(v, 3) for k, v in parts.items() if k != "runs"},
              "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    print(f"{'rule':<16}{'jobs':>7}")
    for rule, n in jobs.items():
        print(f"{rule:<16}{n:>7}")
    print(f"{'total':<16}{total:>7}   ({parts['runs']} evaluated runs)")
    print(f"snakemake -n wall time: median {med:.1f} s over {len(walls)} "
          f"({', '.join(f'{w:.1f}' for w in walls)}); {1000 * med / total:.1f} ms per job; "
          f"CPU {statistics.median(cpus):.1f} s; load average {os.getloadavg()[0]:.1f}")
    print("in process: import {import_s:.1f} s, resolve {resolve_s:.2f} s, expand "
          "{expand_s:.2f} s".format(**parts))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
