"""Running the real workflow in a scratch directory (used by the integration tests)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
             "--workflow-profile", str(ROOT / "workflow" / "profiles" / "default")]


def snakemake(workdir: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-k", "10", str(timeout), *SNAKEMAKE, "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count that `snakemake -n` would run ({} when nothing is to be done)."""
    res = snakemake(workdir, "-n", *args)
    assert res.returncode == 0, res.stderr + res.stdout
    out = res.stdout + res.stderr
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}
