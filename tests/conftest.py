"""Shared fixtures, and how the suite is spread over pytest-xdist workers (scripts/test.sh runs
`-n 2 --dist loadgroup`).

A test module is one unit of work (its module-scoped fixtures are built once), and the modules
that read one session-scoped study share a unit (the study is built once): `micro`, `tiny`,
and the SLURM cluster of `jobcomp`. Units start longest first, so that the SLURM tests, which
mostly wait for the scheduler, overlap with the CPU-bound ones.
"""
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


SHARED = ("jobcomp", "tiny", "micro")  # session fixtures whose readers share a worker
FIRST = ("jobcomp", "test_paper_scale", "tiny", "micro", "test_kill", "test_supervised_workflow")
# ^ units started first (minutes each; a wrong guess here costs time only)


def pytest_collection_modifyitems(config, items):
    """Each item in its unit's `xdist_group`; the units in FIRST's order, then as collected."""
    modules = defaultdict(list)
    for item in items:
        modules[item.path.stem].append(item)
    unit = {}
    for stem, its in modules.items():
        used = set().union(*(it.fixturenames for it in its))
        unit[stem] = next((f for f in SHARED if f in used), stem)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(unit[item.path.stem]))
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda it: rank.get(unit[it.path.stem], len(FIRST)))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models: extra threads only contend on a 2-core machine (results do not change).
    Workflow runs are subprocesses and keep their own thread settings."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    """A randomly initialized tiny CLIP (seed 0), shared by a test module."""
    from clipbd.models import clip

    torch.manual_seed(0)
    return clip.create("clipbd-tiny-vit").eval()


@pytest.fixture(scope="session")
def jobcomp() -> Path:
    """Start (or find running) the local SLURM cluster of scripts/slurm_local.sh (skipped where
    it cannot run: not root, no apt); its file of finished-job records."""
    res = subprocess.run(["timeout", "-k", "10", "900", "bash", str(ROOT / "scripts" / "slurm_local.sh")],
                         capture_output=True, text=True)
    if res.returncode == 3:
        pytest.skip(res.stderr.strip())
    assert res.returncode == 0, res.stdout + res.stderr
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    return Path(re.search(r"^JobCompLoc\s*=\s*(\S+)", conf, flags=re.M).group(1))


@pytest.fixture(scope="session")
def micro(tmp_path_factory) -> Path:
    """The micro study (workflow_util.MICRO) run to completion once per test process and shared
    by the modules that only read a finished run (report, audit, determinism). Read-only: a
    test that edits files or runs jobs in it works on a copy, so every reader sees the run as
    the workflow left it."""
    from workflow_util import MICRO, ran_study

    return ran_study(tmp_path_factory.mktemp("micro"), MICRO, timeout=1500)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny study (tests/data/tiny.yaml) run, pushed to DVC, cloned and pulled
    (tests/dvc_util.py), once per test process: read by test_dvc, test_reruns, test_workflow."""
    from dvc_util import pulled_study

    return pulled_study(tmp_path_factory)
