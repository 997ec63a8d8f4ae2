"""Shared fixtures, and how the suite is spread over pytest-xdist workers (scripts/test.sh runs
`-n <cores> --dist loadgroup`).

A test module is one unit of work (its module-scoped fixtures are built once), and the modules
that read one session-scoped study share a unit (the study is built once): `micro`, `tiny`,
and the SLURM cluster of `jobcomp` (SHARED). Units start longest first, so that the SLURM
tests, which mostly wait for the scheduler, overlap with the CPU-bound ones.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


SHARED = {"micro": ("test_audit", "test_determinism", "test_report_workflow"),
          "tiny": ("test_dvc", "test_reruns", "test_workflow"),
          "jobcomp": ("test_slurm", "test_slurm_faults")}  # session fixture -> its reader modules
UNIT = {module: fixture for fixture, modules in SHARED.items() for module in modules}
FIRST = ("jobcomp", "test_paper_scale", "tiny", "micro", "test_kill", "test_supervised_workflow")
# ^ units started first (minutes each; a wrong guess here costs time only)


def unit_of(nodeid: str) -> str:
    """The unit of work of a test: its shared study, else its module."""
    module = nodeid.split("::", 1)[0]
    return UNIT.get(Path(module).stem, module)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup with the units above (xdist's own reads `xdist_group` marks through
    the node id, which pytest 9 no longer lets a plugin rewrite)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # units in collection order (FIRST), not by test count

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return UnitScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """A module that reads a shared study must be listed as its reader (else a second worker
    would build the study again); the units in FIRST's order, then as collected."""
    for item in items:
        for fixture in set(SHARED) & set(item.fixturenames):
            if item.path.stem not in SHARED[fixture]:
                raise pytest.UsageError(f"{item.path.name} reads the `{fixture}` study: add it to "
                                        f"SHARED[{fixture!r}] in tests/conftest.py")
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda it: rank.get(Path(unit_of(it.nodeid)).stem, len(FIRST)))


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

