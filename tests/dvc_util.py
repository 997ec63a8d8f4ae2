"""A finished tiny study in its own git + DVC repository: run, pushed, cloned and pulled.

The repository is a full copy of this project (tracked and new files) whose default config is
tests/data/tiny.yaml, and every command runs with PYTHONPATH=<copy>/src: the workflow, its jobs
and the code fingerprints all use the copy's sources, as in a user's own checkout. Editing a
file of the copy is thus a real code change, and the project's own src/ is never touched.
Built once per test process (conftest.py's `tiny` fixture; the run costs minutes) and shared by
the test modules.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
_GIT_ID = {"GIT_AUTHOR_NAME": "clipbd-test", "GIT_AUTHOR_EMAIL": "test@clipbd.invalid",
           "GIT_COMMITTER_NAME": "clipbd-test", "GIT_COMMITTER_EMAIL": "test@clipbd.invalid"}


@dataclass(frozen=True)
class Study:
    origin: Path  # where the workflow ran and dvc_push.sh pushed from
    clone: Path   # `git clone` of origin, after scripts/dvc_pull.sh
    remote: Path  # the default remote: ../clipbd-dvc-remote beside both repositories


def versioned(repo: Path) -> list[str]:
    """The folders of results/ that the repository's dvc.yaml versions, sorted."""
    outs = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["study"]["outs"]
    return sorted(Path(o if isinstance(o, str) else next(iter(o))).name for o in outs)


def run(repo: Path, *cmd: str, timeout: int = 600, check: bool = True,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """`cmd` in `repo` with the venv's tools on PATH and the repo's own src/ importable."""
    full_env = {**os.environ, **_GIT_ID, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo / "src"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                **(env or {})}
    res = subprocess.run(["timeout", "-k", "10", str(timeout), *cmd], cwd=repo, env=full_env,
                         capture_output=True, text=True)
    if check:
        assert res.returncode == 0, f"{cmd}: {res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


def snakemake(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "snakemake", "--cores", "2", *args, **kw)


def planned(repo: Path, *args: str) -> list[str]:
    """Jobs `snakemake -n` would run, sorted, as 'rule:wildcard values joined by /'."""
    res = snakemake(repo, "--dry-run", *args)
    if "Nothing to be done" in res.stdout + res.stderr:
        return []
    # Snakemake's job log goes to one stream (grouped jobs indented); parse that one alone
    jobs = _jobs(res.stdout) or _jobs(res.stderr)
    assert jobs, res.stdout + res.stderr
    return sorted(jobs)


def _jobs(text: str) -> list[str]:
    jobs = []
    for block in re.split(r"^(?=[ \t]*(?:local)?rule \w+:$)", text, flags=re.M)[1:]:
        name = re.match(r"\s*(?:local)?rule (\w+):", block).group(1)
        wild = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        pairs = re.split(r", (?=\w+=)", wild.group(1)) if wild else []
        values = [kv.split("=", 1)[1] for kv in pairs]
        jobs.append(":".join([name, "/".join(values)]) if values else name)
    return jobs


def copy_project(dest: Path) -> None:
    """Tracked and new (not ignored) files of this working tree, as a fresh repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    shutil.copy(ROOT / "tests" / "data" / "tiny.yaml", dest / "config" / "config.yaml")


def pulled_study(tmp_path_factory) -> Study:
    """Run the tiny study, push it, clone it, pull it (conftest.py's `tiny`, once per process)."""
    base = tmp_path_factory.mktemp("dvc")
    origin, clone = base / "origin", base / "clone"
    copy_project(origin)
    run(origin, "git", "init", "-q")
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "tiny study")
    snakemake(origin, timeout=2400)
    run(origin, "bash", "scripts/dvc_push.sh")
    run(origin, "git", "add", "dvc.lock", "results/study.json")
    run(origin, "git", "commit", "-qm", "artifacts of the tiny study")
    run(base, "git", "clone", "-q", str(origin), str(clone))
    run(clone, "bash", "scripts/dvc_pull.sh", timeout=1200)
    return Study(origin, clone, base / "clipbd-dvc-remote")
