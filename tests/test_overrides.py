"""Overrides of nested keys (`snakemake --config`): path keys and strings typed by the schema.

Snakemake hands `--config 'defenses={rvpt: {lr: 0.1}}'` over with every leaf a string and
rejects `defenses.rvpt.lr=0.1` itself (keys must be identifiers), so the path spelling on the
command line is `defenses__rvpt__lr=0.1`.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from clipbd.config import ConfigError, resolve, schema
from clipbd.config_overrides import coerce, expand_paths
from workflow_util import ROOT, snakemake

BASE = {"seed": 0, "image_size": 32,
        "datasets": {"shapes": {"kind": "synthetic", "n_train": 100, "n_test": 20,
                                "target": "triangle", "templates": ["a photo of a {}."]}},
        "defenses": {"rvpt": {"depth": 3, "lr": 0.5}},
        "grid": [{"datasets": ["shapes"], "attacks": ["clean"], "defenses": ["none", "rvpt"],
                  "shots": [2]}]}


def _cfg(**over):
    return {**json.loads(json.dumps(BASE)), **over}


def test_path_keys_set_nested_keys_and_win_over_the_file():
    got = expand_paths(_cfg(defenses__rvpt__lr=0.1, **{"attacks.badnet.patch_size": 4},
                            grid__0__shots=[1, 2]))
    assert got["defenses"]["rvpt"] == {"depth": 3, "lr": 0.1}
    assert got["attacks"] == {"badnet": {"patch_size": 4}}
    assert got["grid"][0]["shots"] == [1, 2] and "defenses__rvpt__lr" not in got
    cfg = resolve(_cfg(defenses__rvpt__lr=0.1, defenses__rvpt__epochs="7"))
    assert cfg["defenses"]["rvpt"]["lr"] == 0.1 and cfg["defenses"]["rvpt"]["epochs"] == 7
    assert cfg["defenses"]["rvpt"]["depth"] == 3  # the rest of the block stays


def test_strings_are_typed_by_the_schema():
    """What Snakemake's YAML base loader hands over for a nested value."""
    sch = schema()
    got = coerce({"seed": "3", "plan_only": "true", "defenses": {
        "rvpt": {"lr": "0.1", "depth": "2", "cache_lower": "false", "margin": "null"},
        "coop": {"init": "null", "n_ctx": "4"}, "vpt": {"init_std": "1e-3"}},
        "grid": [{"shots": ["1", "16"], "datasets": ["1"]}],
        "datasets": {"d": {"kind": "synthetic", "templates": ["{}"], "target": "7"}}}, sch)
    assert got["seed"] == 3 and got["plan_only"] is True
    assert got["defenses"]["rvpt"] == {"lr": 0.1, "depth": 2, "cache_lower": False,
                                       "margin": None}
    assert got["defenses"]["coop"] == {"init": None, "n_ctx": 4}
    assert got["defenses"]["vpt"]["init_std"] == 0.001
    assert got["grid"] == [{"shots": [1, 16], "datasets": ["1"]}]  # strings stay strings
    assert got["datasets"]["d"]["target"] == "7"
    rvpt = resolve(_cfg(defenses={"rvpt": {"depth": "3", "lr": "0.1"}}))["defenses"]["rvpt"]
    assert rvpt["lr"] == 0.1 and rvpt["depth"] == 3


@pytest.mark.parametrize("over,message", [
    ({"defenses__rvpt__lr": "fast"}, "`defenses.rvpt.lr`: 'fast' is not a number"),
    ({"defenses": {"rvpt": {"depth": "2.5"}}}, "`defenses.rvpt.depth`: '2.5' is not an integer"),
    ({"defenses": {"rvpt": {"cache_lower": "maybe"}}}, "'maybe' is not true or false"),
    ({"grid__0__shots": "[1, x]"}, r"`grid\[0\].shots\[1\]`: 'x' is not an integer"),
    ({"defenses__rvpt__lrr": 0.1}, "`defenses.rvpt.lrr`: Additional properties"),
    ({"seed__x": 1}, "`seed.x`: `seed` is 0, not a mapping"),
    ({"grid__3__shots": [1]}, "`grid.3`: `grid` is a list of 1; index it with 0..0"),
    ({"defenses____lr": 1}, "an empty part"),
])
def test_bad_overrides_name_the_key_and_the_type(over, message):
    with pytest.raises(ConfigError, match=message):
        resolve(_cfg(**over))


def _defend_params(out: str) -> dict[str, dict]:
    cmds = re.findall(r"^Shell command: python -m clipbd defend --cfg '(\{.*?\})'", out, re.M)
    return {c["defense"]: c["params"] for c in map(json.loads, cmds)}


def test_snakemake_dry_run_takes_both_override_forms(tmp_path):
    shutil.copy(ROOT / "tests" / "data" / "tiny.yaml", tmp_path / "config.yaml")
    res = snakemake(tmp_path, "-n", "-p", "--config", "plan_only=true",
                    "defenses={rvpt: {lr: 0.1, cache_lower: false}}", "defenses__cbpt__epochs=7",
                    timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    params = _defend_params(res.stdout + res.stderr)
    tiny = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())["defenses"]
    assert params["rvpt"]["lr"] == 0.1 and params["rvpt"]["cache_lower"] is False
    assert params["rvpt"]["depth"] == tiny["rvpt"]["depth"] == 3  # the file's other keys stay
    assert params["cbpt"]["epochs"] == 7 and params["cbpt"]["lr"] == tiny["cbpt"]["lr"]
    bad = snakemake(tmp_path, "-n", "--config", "plan_only=true", "defenses__rvpt__lr=fast",
                    timeout=300)
    assert bad.returncode != 0
    assert "clipbd config error: config key `defenses.rvpt.lr`: 'fast' is not a number" in \
        bad.stderr + bad.stdout
    dotted = snakemake(tmp_path, "-n", "--config", "defenses.rvpt.lr=0.1", timeout=300)
    # Snakemake's own parser refuses it before the workflow runs (documented: use `__`)
    assert dotted.returncode != 0 and "valid identifier" in dotted.stderr + dotted.stdout
    assert not (tmp_path / "results").exists()
