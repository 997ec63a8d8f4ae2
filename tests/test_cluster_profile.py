"""The cluster path without a cluster: the SLURM flags of the profile's commented GPU keys
(through the pinned executor plugin's own functions) and memory sized from input sizes."""
from __future__ import annotations

import re
import shutil

import pytest
import yaml

from workflow_util import ROOT, snakemake

PROFILE = (ROOT / "slurm" / "config.yaml").read_text()


class _Resources(dict):
    """What the plugin reads of a job: `resources.get(k)` and `resources.k`."""

    def __getattr__(self, key):
        return self[key]


class _Job:
    def __init__(self, **resources):
        self.resources = _Resources(resources)


def _examples() -> dict[str, dict]:
    """The commented `rule: {...}` examples at the bottom of slurm/config.yaml."""
    lines = re.findall(r"^#   (\w+: \{.*\})$", PROFILE, flags=re.M)
    assert lines, "no commented set-resources examples in slurm/config.yaml"
    return {k: v for line in lines for k, v in yaml.safe_load(line).items()}


def test_commented_gpu_keys_give_the_flags_they_promise():
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    assert set_gres_string(_Job(gpu=1)) == " --gpus=1"  # the rules' own request
    assert set_gres_string(_Job(gpu=1, gpu_model="a100")) == " --gpus=a100:1"
    assert set_gres_string(_Job(gpu=1, gres="gpu:a100:1")) == " --gres=gpu:a100:1 --gpus=1"
    examples = _examples()
    assert set(examples) == {"defend", "evaluate"}
    for res in examples.values():  # uncommented, as a GRES-only cluster would
        assert set_gres_string(_Job(**res)) == " --gres=gpu:1"  # gpu: 0 drops --gpus
    validate_slurm_extra(_Job(slurm_extra="--exclusive"))
    with pytest.raises(Exception, match="GRES.*not allowed in the .slurm_extra"):
        validate_slurm_extra(_Job(slurm_extra="--gres=gpu:1"))
    for key in ("gpu_model", "gres", "constraint", "qos", "slurm_extra"):
        assert re.search(rf"^#   {key}: ", PROFILE, flags=re.M), key
    assert "gres" not in yaml.safe_load(PROFILE)["set-resources"].get("defend", {})


def _backdoor_mem(work, poisoned_mb: int, clean_mb: int) -> int:
    # the corpus's source splits (backdoor.datasets) are the backdoor job's inputs too: older
    files = [(work / f"results/data/{name}/{split}.safetensors", 1)
             for name in ("fmnist", "shapes") for split in ("train", "test")]
    files += [(work / "results/poisoned/fmnist/badnet/default/seed~0/train.safetensors",
               poisoned_mb), (work / "results/models/clean/model.safetensors", clean_mb)]
    for path, mb in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(mb * 2**20)  # sparse: the size is what counts
    res = snakemake(work, "-n", "--config", "plan_only=true", "--",
                    "results/models/backdoor/fmnist/badnet/default/seed~0/model.safetensors",
                    timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert re.findall(r"^rule (\w+):", out, flags=re.M) == ["backdoor"]
    return int(re.search(r"resources: .*\bmem_mb=(\d+)", out).group(1))


def test_memory_of_data_heavy_jobs_does_not_follow_their_input_size(tmp_path):
    """Splits stay on disk and a poisoned corpus is an index into them: a backdoor job over a
    5 GB corpus asks for the same memory as over a small one (it used to ask 2x its inputs)."""
    shutil.copy(ROOT / "tests" / "data" / "tiny.yaml", tmp_path / "config.yaml")
    assert _backdoor_mem(tmp_path, 20, 5) == 8000  # the rule's base
    assert _backdoor_mem(tmp_path, 5000, 100) == 8000


def _defend_resources(work, profile, *args) -> str:
    res = snakemake(work, "-n", "--profile", str(profile), "--config", "plan_only=true", *args,
                    timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    return re.search(r"^rule defend:.*?resources: ([^\n]*)", out, flags=re.M | re.S).group(1)


def test_command_line_set_resources_replaces_the_profiles_block(tmp_path):
    """The trap config/README.md warns about: a command-line --set-resources (or
    --default-resources) replaces the profile's, so the GPU rules lose their partition."""
    shutil.copy(ROOT / "tests" / "data" / "tiny.yaml", tmp_path / "config.yaml")
    profile = tmp_path / "slurm-mine"
    profile.mkdir()
    cfg = yaml.safe_load(PROFILE)
    local = {k: cfg[k] for k in ("default-resources", "set-resources")}  # no sbatch here
    (profile / "config.yaml").write_text(yaml.safe_dump(local))
    assert "slurm_partition=gpu" in _defend_resources(tmp_path, profile)
    replaced = _defend_resources(tmp_path, profile, "--set-resources", "evaluate:gpu=0")
    assert "slurm_partition=cpu" in replaced and "slurm_partition=gpu" not in replaced
    no_account = _defend_resources(tmp_path, profile, "--default-resources", "mem_mb=1000")
    assert "slurm_account" not in no_account
    local["set-resources"]["defend"]["gpu"] = 0  # the safe way: edit a copy of the profile
    (profile / "config.yaml").write_text(yaml.safe_dump(local))
    edited = _defend_resources(tmp_path, profile)
    assert "slurm_partition=gpu" in edited and "gpu=0" in edited and "slurm_account=" in edited
