import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


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
