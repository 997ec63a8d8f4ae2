"""Where a Snakemake run's wall time went: per rule, job count and job seconds, from its log.

Usage: .venv/bin/python benchmarks/timeline.py [LOG]   (default: the newest .snakemake/log)

A job's seconds run from its "[date]" start line to the "[date]" line before its
"Finished jobid" line (1 s resolution: Snakemake's clock). The sum over jobs against the wall
time and the cores says how busy the cores were; the per-rule rows say which rules to make
cheaper. Writes results/benchmarks/timeline.json.
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
START = re.compile(r"^\s*(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s*jobid: (\d+)$")
DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
CORES = re.compile(r"^Provided cores: (\d+)$")


def parse(lines: list[str]) -> dict:
    """{'cores', 'wall_s', 'jobs': [(rule, start, end)]} from a Snakemake log's lines."""
    now, first, last, cores = None, None, None, None
    pending, started, jobs = None, {}, []
    for line in lines:
        if m := STAMP.match(line.strip()):
            now = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            first, last = first or now, now
        elif m := CORES.match(line):
            cores = int(m.group(1))
        elif m := START.match(line):
            pending = (m.group(1), now)
        elif (m := JOBID.match(line)) and pending:
            started[m.group(1)], pending = pending, None
        elif (m := DONE.match(line)) and m.group(1) in started:
            rule, t0 = started.pop(m.group(1))
            jobs.append((rule, t0, now))
    wall = (last - first).total_seconds() if first else 0.0
    return {"cores": cores, "wall_s": wall, "jobs": jobs}


def summary(run: dict) -> dict:
    rules = defaultdict(lambda: [0, 0.0])
    for rule, t0, t1 in run["jobs"]:
        rules[rule][0] += 1
        rules[rule][1] += (t1 - t0).total_seconds()
    busy = sum(s for _, s in rules.values())
    return {"wall_s": run["wall_s"], "cores": run["cores"], "jobs": len(run["jobs"]),
            "job_s": busy, "core_use": busy / (run["wall_s"] * (run["cores"] or 1) or 1),
            "rules": {r: {"jobs": n, "seconds": s} for r, (n, s) in
                      sorted(rules.items(), key=lambda kv: -kv[1][1])}}


def main(argv: list[str]) -> int:
    logs = sorted((ROOT / ".snakemake" / "log").glob("*.snakemake.log"))
    path = Path(argv[0]) if argv else (logs[-1] if logs else None)
    if path is None or not path.is_file():
        print("no Snakemake log: pass one, or run the study first", file=sys.stderr)
        return 2
    s = summary(parse(path.read_text().splitlines()))
    print(f"{path.name}: {s['jobs']} jobs, wall {s['wall_s']:.0f} s, job seconds "
          f"{s['job_s']:.0f} on {s['cores']} cores = {s['core_use']:.2f} of the cores busy")
    print(f"{'rule':<16}{'jobs':>5}{'seconds':>9}{'per job':>9}")
    for rule, r in s["rules"].items():
        print(f"{rule:<16}{r['jobs']:>5}{r['seconds']:>9.0f}{r['seconds'] / r['jobs']:>9.1f}")
    out = ROOT / "results" / "benchmarks" / "timeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"log": path.name, **s}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
