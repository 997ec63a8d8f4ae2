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


def ran_study(work: Path, config: dict, timeout: int = 1200) -> Path:
    """`config` written to `work`/config.yaml and run to completion (asserted); returns `work`."""
    import yaml

    (work / "config.yaml").write_text(yaml.safe_dump(config))
    res = snakemake(work, timeout=timeout)
    assert res.returncode == 0, res.stderr[-5000:]
    return work


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count that `snakemake -n` would run ({} when nothing is to be done)."""
    res = snakemake(workdir, "-n", *args)
    assert res.returncode == 0, res.stderr + res.stdout
    return job_stats(res.stdout + res.stderr)


def job_stats(out: str) -> dict[str, int]:
    """Rule -> job count of the first "Job stats" table in a snakemake run's output."""
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


# The micro study several test modules read (conftest.py `micro`, run once per test process):
# the paper rules and `snakemake --report` (test_report_workflow: BadNet vs VPT and RVPT, so that
# tables, probes and probe figures all run), the audit (test_audit: the chain table -> metrics ->
# FT delta -> backdoored model -> ...) and determinism (test_determinism: a second run of its
# none and FT rows, byte for byte). FT is a block of its own: no clean-model FT run is added.
MICRO = {
    "seed": 0, "image_size": 32,
    "datasets": {"shapes": {"kind": "synthetic", "n_train": 300, "n_test": 100,
                            "target": "triangle", "templates": ["a photo of a {} shape."]}},
    "pretrain": {"steps": 10, "batch_size": 64, "lr": 0.002, "warmup": 2},
    "backdoor": {"corpus_size": 300, "steps": 10, "batch_size": 64, "lr": 0.002, "warmup": 2},
    "attacks": {"badnet": {"poison_rate": 0.05, "patch_size": 3, "location": "corner"}},
    "defenses": {"vpt": {"depth": 2, "length": 4, "epochs": 2},
                 "rvpt": {"depth": 2, "length": 4, "epochs": 2},
                 "ft": {"epochs": 2, "batch_size": 8}},
    "grid": [{"datasets": ["shapes"], "attacks": ["clean", "badnet"],
              "defenses": ["none", "vpt", "rvpt"], "shots": [2], "seeds": [0]},
             {"datasets": ["shapes"], "attacks": ["badnet"], "defenses": ["ft"],
              "shots": [2], "seeds": [0]}],
}


def micro_study(*, seed: int, steps: int, attack: str, defense: str, grid_seed: int) -> dict:
    """A workflow config small enough for a test: synthetic shapes, one attack, `none` plus
    one few-shot defense (2 epochs, 2 shots), a few pre-training and backdoor steps."""
    return {"seed": seed, "image_size": 32,
            "datasets": {"shapes": {"kind": "synthetic", "n_train": 240, "n_test": 60,
                                    "target": "triangle",
                                    "templates": ["a photo of a {} shape.", "a drawing of a {}."]}},
            "pretrain": {"steps": steps, "batch_size": 32, "warmup": 1},
            "backdoor": {"corpus_size": 200, "steps": steps, "batch_size": 32, "warmup": 1},
            "attacks": {attack: {"poison_rate": 0.1}},
            "defenses": {defense: {"epochs": 2, "batch_size": 8}},
            "grid": [{"datasets": ["shapes"], "attacks": [attack], "defenses": ["none", defense],
                      "shots": [2], "seeds": [grid_seed]}]}


def commented(src: str) -> str:
    """`src` with its module docstring reworded (or one added) and a comment at its end."""
    import ast

    tree = ast.parse(src)
    if ast.get_docstring(tree, clean=False) is None:
        return '"""A new docstring."""\n' + src + "\n# noted\n"
    first = tree.body[0]
    lines = src.splitlines(keepends=True)
    doc = "".join(lines[first.lineno - 1:first.end_lineno])
    quote = doc.lstrip()[:3] if doc.lstrip()[:3] in ('"""', "'''") else doc.lstrip()[:1]
    reworded = doc.replace(quote, quote + "Reworded. ", 1)
    return "".join(lines[:first.lineno - 1]) + reworded + "".join(lines[first.end_lineno:]) + "# noted\n"
