"""The conda environments (`snakemake --sdm conda`): pinned as requirements.lock, and their
`python -m clipbd` finds this checkout's code without an installation."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from workflow_util import ROOT


def _pins(lines) -> dict[str, str]:
    out = {}
    for ln in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", ln.strip())
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def _env(name):
    env = yaml.safe_load((ROOT / name).read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    return env, pip[0]


LOCK = _pins((ROOT / "requirements.lock").read_text().splitlines())


@pytest.mark.parametrize("name,torch", [("environment.yml", "2.13.0+cpu"),
                                        ("environment-cuda.yml", "2.13.0")])
def test_env_files_pin_the_lock(name, torch):
    env, pip = _env(name)
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    pins = _pins(pip)
    assert len(LOCK) > 100 and LOCK["torch"] == "2.13.0"
    assert {k: v for k, v in pins.items() if k != "torch"} == \
        {k: v for k, v in LOCK.items() if k != "torch"}
    assert pins["torch"] == torch and torch.split("+")[0] == LOCK["torch"]
    assert [ln for ln in pip if not re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+", ln)] == (
        ["--extra-index-url https://download.pytorch.org/whl/cpu"] if "+cpu" in torch else [])
    deps = yaml.safe_load("[" + re.search(r"dependencies = \[(.*?)\]",
                                          (ROOT / "pyproject.toml").read_text(), re.S).group(1)
                          + "]")
    for dep in _pins(deps).items():  # the package's own pins agree too
        assert dep[1] == LOCK[dep[0]], dep


def test_workflow_picks_the_env_file(tmp_path):
    from clipbd.config import resolve

    base = {"datasets": {"s": {"kind": "synthetic", "n_train": 8, "n_test": 8, "target": "triangle",
                              "templates": ["{}"]}},
            "grid": [{"datasets": ["s"], "attacks": ["clean"], "defenses": ["none"]}]}
    assert resolve(base)["conda_env"] == "environment.yml"
    assert resolve({**base, "conda_env": "environment-cuda.yml"})["conda_env"] == \
        "environment-cuda.yml"
    assert "ENV = f\"../../{config['conda_env']}\"" in \
        (ROOT / "workflow" / "rules" / "common.smk").read_text()


def test_job_python_imports_this_checkout_without_an_install():
    """What a conda env without clipbd sees: no site-packages (`-S`), only PYTHONPATH."""
    from clipbd import config

    saved = os.environ.get("PYTHONPATH")
    try:
        os.environ["PYTHONPATH"] = "/elsewhere"
        config.job_environment()
        env = dict(os.environ)
    finally:
        os.environ.pop("PYTHONPATH") if saved is None else os.environ.update(PYTHONPATH=saved)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT / "src"), "/elsewhere"]
    res = subprocess.run([sys.executable, "-S", "-c", "import clipbd.registry, clipbd; "
                          "print(clipbd.__file__)"], env=env, cwd="/", capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(ROOT / "src" / "clipbd" / "__init__.py")
