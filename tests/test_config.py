"""clipbd.config: schema defaults, and every bad config names its key and a fix."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from clipbd import config
from clipbd.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture
def cfg():
    return copy.deepcopy(DEFAULT)


def test_default_config_resolves_and_fills_defaults(cfg):
    out = config.resolve(cfg)
    # config.yaml sets rate and location; fixed_pattern, noise_overflow: the schema's defaults
    assert out["attacks"]["badnet"] == {"poison_rate": 0.05, "patch_size": 3,
                                        "location": "corner", "fixed_pattern": True,
                                        "noise_overflow": "clamp"}
    assert out["defenses"]["none"] == {}
    assert out["defenses"]["linear_probe"] == {"epochs": 40, "lr": 0.01, "momentum": 0.9,
                                               "batch_size": 32}
    assert out["pretrain"]["datasets"] == ["fmnist", "shapes"]
    assert out["backdoor"]["datasets"] == ["fmnist", "shapes"]
    assert out["pretrain"]["weight_decay"] == 0.1 and out["pretrain"]["warmup"] == 30
    assert out["backdoor"]["warmup"] == 10
    assert out["backdoor"]["poison_templates"] == "dataset"  # config.yaml: its own templates
    assert out["model"] == {"arch": "clipbd-tiny-vit", "weights": None, "sha256": None}
    assert (out["plan_only"], out["eval_batch_size"]) == (False, 500)
    assert "device" not in out  # GPU options arrive with the performance work
    assert out["grid"][0]["attack_params"] == {} and out["grid"][0]["defense_params"] == {}
    # the caller's dict is not mutated
    assert cfg == DEFAULT


def test_grid_block_defaults_shots_and_seeds(cfg):
    del cfg["grid"][0]["shots"], cfg["grid"][0]["seeds"]
    block = config.resolve(cfg)["grid"][0]
    assert block["shots"] == [16]
    assert block["seeds"] == [0]


def test_fashion_mnist_path_defaults_to_debian_root(cfg):
    del cfg["datasets"]["fmnist"]["path"]
    out = config.resolve(cfg)
    assert out["datasets"]["fmnist"]["path"] == "/usr/share/datasets/fashion-mnist"


def test_explicit_stage_datasets_are_kept(cfg):
    cfg["pretrain"]["datasets"] = ["shapes"]
    out = config.resolve(cfg)
    assert out["pretrain"]["datasets"] == ["shapes"]
    assert out["backdoor"]["datasets"] == ["fmnist", "shapes"]


def test_load_applies_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(DEFAULT))
    out = config.load(p, {"seed": 7, "image_size": 16})
    assert (out["seed"], out["image_size"]) == (7, 16)


def test_plan_only_accepts_missing_files(cfg, tmp_path):
    cfg["plan_only"] = True
    cfg["datasets"]["fmnist"]["path"] = str(tmp_path / "nowhere")
    cfg["model"]["weights"] = str(tmp_path / "missing.safetensors")
    cfg["model"]["sha256"] = "ab" * 32
    out = config.resolve(cfg)
    assert out["datasets"]["fmnist"]["path"] == str(tmp_path / "nowhere")
    assert out["model"]["weights"] == str(tmp_path / "missing.safetensors")


def test_existing_weights_with_sha_accepted(cfg, tmp_path):
    from clipbd.artifacts import save_tensors, sha256_file
    import torch

    w = tmp_path / "w.safetensors"  # the header is what the config check reads
    save_tensors(w, {"logit_scale": torch.zeros(())}, {"arch": "clipbd-tiny-vit"})
    cfg["model"]["weights"] = str(w)
    cfg["model"]["sha256"] = sha256_file(w)
    assert config.resolve(cfg)["model"]["weights"] == str(w)


def _set(path, value):
    """Mutation: set a nested key given as a tuple path."""
    def mutate(c, tmp):
        d = c
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(c, tmp):
        d = c
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]
    return mutate


def _fmnist_missing(c, tmp):
    c["datasets"]["fmnist"]["path"] = str(tmp)


def _weights_no_sha(c, tmp):
    c["model"]["weights"] = str(tmp / "w.safetensors")


def _weights_missing(c, tmp):
    c["model"]["weights"] = str(tmp / "w.safetensors")
    c["model"]["sha256"] = "ab" * 32


G = ("grid", 0)
BAD = [
    ("unknown-attack", _set(G + ("attacks", 1), "bogus"),
     "grid[0].attacks[1]", "known: clean, badclip, badnet, blended, sig, ssba, trojvqa, wanet"),
    ("unknown-defense", _set(G + ("defenses", 1), "prune"),
     "grid[0].defenses[1]", "known: cbpt, cleanclip, coop, fst, ft, linear_probe, none, rvpt, vpt"),
    ("unknown-grid-dataset", _set(G + ("datasets", 0), "cifar"),
     "grid[0].datasets[0]", "defined under `datasets`: fmnist, shapes"),
    ("shots-zero", _set(G + ("shots",), [16, 0]), "grid[0].shots[1]", "expected minimum 1"),
    ("shots-negative", _set(G + ("shots",), [-4]), "grid[0].shots[0]", "expected minimum 1"),
    ("grid-seed-negative", _set(G + ("seeds",), [0, -1]), "grid[0].seeds[1]",
     "expected minimum 0"),
    ("target-not-a-class", _set(("datasets", "shapes", "target"), "sneaker"),
     "datasets.shapes.target", "choose one of: circle, square, triangle"),
    ("fmnist-path-missing", _fmnist_missing, "datasets.fmnist.path", "dataset-fashion-mnist"),
    ("top-level-typo", _set(("seeds",), 1), "seeds", "'seeds' was unexpected"),
    ("badnet-unknown-key", _set(("attacks", "badnet", "patchsize"), 3),
     "attacks.badnet.patchsize", "'patchsize' was unexpected"),
    ("poison-rate-zero", _set(("attacks", "badnet", "poison_rate"), 0),
     "attacks.badnet.poison_rate", "expected exclusiveMinimum 0"),
    ("poison-rate-above-one", _set(("attacks", "badnet", "poison_rate"), 1.5),
     "attacks.badnet.poison_rate", "expected maximum 1"),
    ("location-not-in-enum", _set(("attacks", "badnet", "location"), "middle"),
     "attacks.badnet.location", "expected enum ['random', 'corner', 'center']"),
    ("weights-without-sha", _weights_no_sha, "model.sha256", "required when model.weights is set"),
    ("weights-file-missing", _weights_missing, "model.weights", "not found"),
    ("sha-malformed", _set(("model", "sha256"), "abc123"), "model.sha256", "expected pattern"),
    ("pretrain-unknown-dataset", _set(("pretrain", "datasets"), ["fmnist", "mnist"]),
     "pretrain.datasets[1]", "unknown dataset 'mnist'; defined: fmnist, shapes"),
    ("backdoor-unknown-dataset", _set(("backdoor", "datasets"), ["cifar"]),
     "backdoor.datasets[0]", "unknown dataset 'cifar'; defined: fmnist, shapes"),
    ("grid-empty", _set(("grid",), []), "grid", "expected minItems 1"),
    ("grid-block-no-defenses", _delete(G + ("defenses",)),
     "grid[0]", "'defenses' is a required property; add it"),
    ("template-without-braces", _set(("datasets", "fmnist", "templates", 2), "a photo"),
     "datasets.fmnist.templates[2]", "expected pattern"),
    ("synthetic-missing-n-train", _delete(("datasets", "shapes", "n_train")),
     "datasets.shapes.n_train", "required for synthetic datasets"),
    ("image-size-too-small", _set(("image_size",), 4), "image_size", "expected minimum 8"),
    ("defense-param-unowned", _set(G + ("defense_params",), {"gamma": [1.0]}),
     "grid[0].defense_params.gamma", "no defense of this block has a hyperparameter 'gamma'"),
    # `lr` belongs to a defense, not to an attack: kinds must not be mixed up
    ("attack-param-unowned", _set(G + ("attack_params",), {"epochs": [0.1]}),
     "grid[0].attack_params.epochs", "no attack of this block has a hyperparameter 'epochs'"),
    ("attack-param-clean-only", lambda c, t: c["grid"][0].update(
        attacks=["clean"], attack_params={"poison_rate": [0.1]}),
     "grid[0].attack_params.poison_rate", "no attack of this block"),
    ("dataset-kind-unknown", _set(("datasets", "shapes", "kind"), "cifar"),
     "datasets.shapes.kind", "expected enum ['fashion_mnist', 'synthetic', 'image_folder', "
     "'caption_csv', 'webdataset']"),
    ("separator-two-chars", _set(("datasets", "shapes", "separator"), "\\t"),
     "datasets.shapes.separator", "expected maxLength 1"),
    ("templates-empty", _set(("datasets", "shapes", "templates"), []),
     "datasets.shapes.templates", "expected minItems 1"),
    ("device-not-a-key", _set(("device",), "cuda"), "device", "remove it or fix its spelling"),
    ("grid-params-empty-list", _set(G + ("attack_params",), {"poison_rate": []}),
     "grid[0].attack_params.poison_rate", "expected minItems 1"),
]


@pytest.mark.parametrize("mutate,key,hint", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_names_key_and_hint(cfg, tmp_path, mutate, key, hint):
    mutate(cfg, tmp_path)
    with pytest.raises(ConfigError) as info:
        config.resolve(cfg)
    msg = str(info.value)
    assert f"`{key}`" in msg
    assert hint in msg


def test_negative_top_level_seed_rejected(cfg):
    cfg["seed"] = -1
    with pytest.raises(ConfigError, match="`seed`"):
        config.resolve(cfg)


def test_job_environment_sets_defaults_and_keeps_the_users(monkeypatch):
    for name in ("OMP_WAIT_POLICY", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                 "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1234")
    monkeypatch.setenv("PATH", "/usr/bin")
    config.job_environment()
    import os
    import sys

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == str(4 * 2**30)
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "1234"  # a user's setting wins
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)


@pytest.mark.parametrize("value", ["openai", ["a photo"], []])
def test_bad_poison_templates_name_the_key(cfg, value):
    cfg["backdoor"]["poison_templates"] = value
    with pytest.raises(ConfigError,
                       match=r"config key `backdoor.poison_templates`.*openai_imagenet"):
        config.resolve(cfg)


def test_the_schema_ships_in_the_wheel(tmp_path):
    """A wheel install has no workflow/ folder: the schema is package data (issue 20)."""
    build = tmp_path / "build"
    shutil.copytree(ROOT / "src", build / "src", ignore=shutil.ignore_patterns("*.egg-info",
                                                                                "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", build)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", str(build), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("clipbd-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = ("import clipbd, clipbd.config as c; print(clipbd.__file__); "
            "print(sorted(c.schema()['properties'])[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    where, keys = out.stdout.splitlines()
    assert where.startswith(str(site)) and keys == "['accelerator', 'attacks', 'backdoor']"
    assert (ROOT / "workflow" / "schemas" / "config.schema.yaml").resolve() == \
        (ROOT / "src" / "clipbd" / "schemas" / "config.schema.yaml").resolve()
