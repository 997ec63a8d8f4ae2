"""Benchmark: the embedded study's evaluation stage with vs without the feature cache.

Usage: .venv/bin/python benchmarks/study_cache.py [--results results] [--configfile ...]

Needs a finished study (`bash scripts/study.sh`). Copies its trained artifacts (data,
triggers, poisoned sets, models, defense deltas; few-shot draws live under data/) into two scratch
directories, then times the same Snakemake run in each: everything after training (features,
every evaluation, tables, figures, probes) with `feature_cache: true` and with `false`.
Training jobs are identical in both and not re-run, so the ratio is the cache's effect on
what it touches. Prints both wall times and the ratio; writes
results/benchmarks/study_cache.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ("data", "triggers", "poisoned", "models", "defenses")  # data/ holds the few-shot draws


def run(work: Path, configfiles: list[str], cache: bool) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
           "--workflow-profile", str(ROOT / "workflow" / "profiles" / "default"),
           "--directory", str(work), "--cores", "2", "--rerun-triggers", "mtime",
           "--configfile", *configfiles, "--config", f"feature_cache={str(cache).lower()}"]
    t0 = time.time()
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.time() - t0
    if res.returncode:
        sys.exit(res.stderr[-3000:])
    return wall, sum(ln.startswith("Finished job") for ln in res.stderr.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results"))
    ap.add_argument("--configfile", nargs="+", default=[str(ROOT / "config" / "config.yaml")])
    args = ap.parse_args()
    src = Path(args.results)
    missing = [d for d in TRAINED if not (src / d).is_dir()]
    if missing:
        sys.exit(f"{src}: no {', '.join(missing)}: run `bash scripts/study.sh` first")
    figures = {}
    for cache in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for d in TRAINED:
                shutil.copytree(src / d, work / "results" / d)  # copy2 keeps mtimes
            wall, jobs = run(work, [str(Path(c).resolve()) for c in args.configfile], cache)
        key = "cached" if cache else "uncached"
        figures[f"{key}_wall_s"], figures[f"{key}_jobs"] = round(wall, 1), jobs
        print(f"evaluation stage, feature cache {'on ' if cache else 'off'}: "
              f"{wall:7.1f} s ({jobs} jobs)")
    figures["speedup"] = round(figures["uncached_wall_s"] / figures["cached_wall_s"], 2)
    print(f"ratio uncached / cached: {figures['speedup']:.2f}x")
    out = ROOT / "results" / "benchmarks" / "study_cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
