"""Bad input: every bad config gives one error naming the key and the fix, before any job.

Each case goes through the real entry point (`clipbd.config.resolve`, which the Snakefile
calls); two also through `snakemake -n`, to show the message reaches the user and no job runs.
"""
from __future__ import annotations

import copy
import shutil

import pytest
import yaml

from clipbd.config import ConfigError, resolve
from workflow_util import snakemake

BASE = {
    "seed": 0,
    "image_size": 32,
    "datasets": {"shapes": {"kind": "synthetic", "n_train": 100, "n_test": 20, "target": "triangle",
                            "templates": ["a photo of a {}."]}},
    "pretrain": {"steps": 2, "batch_size": 8},
    "attacks": {"badnet": {"poison_rate": 0.05}, "trojvqa": {"poison_rate": 0.05}},
    "defenses": {"cbpt": {"n_ctx": 4}, "coop": {"n_ctx": 4}, "rvpt": {"depth": 3},
                 "vpt": {"depth": 2}},
    "grid": [{"datasets": ["shapes"], "attacks": ["clean", "badnet", "trojvqa"],
              "defenses": ["none", "cbpt", "coop", "rvpt", "vpt", "ft"], "shots": [2],
              "seeds": [0]}],
}
ZEROS = "0" * 64


def _set(cfg, dotted, value):
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    last = keys[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


DELETE = object()

# (case, [(dotted path, new value)], key named in the message, fix text in the message)
CASES = [
    ("unknown attack", [("grid.0.attacks", ["clean", "badnett"])],
     "`grid[0].attacks[1]`", "known: clean, "),
    ("unknown defense", [("grid.0.defenses", ["none", "rvtp"])],
     "`grid[0].defenses[1]`", "known: "),
    ("shots zero", [("grid.0.shots", [0])], "`grid[0].shots[0]`", "expected minimum 1"),
    ("shots negative", [("grid.0.shots", [4, -2])], "`grid[0].shots[1]`", "expected minimum 1"),
    ("seed not a number", [("grid.0.seeds", ["one"])], "`grid[0].seeds[0]`", "give an integer"),
    ("missing dataset path", [("datasets.fm", {"kind": "fashion_mnist", "path": "/nonexistent/fm",
                                               "target": "sneaker", "templates": ["a {}."]})],
     "`datasets.fm.path`", "apt-get install dataset-fashion-mnist"),
    ("target not a class", [("datasets.shapes.target", "hexagon")],
     "`datasets.shapes.target`", "choose one of: "),
    ("rvpt deeper than the model", [("defenses.rvpt.depth", 5)],
     "`defenses.rvpt.depth`", "set it to at most 3"),
    ("vpt deeper than the model", [("defenses.vpt.depth", 4)],
     "`defenses.vpt.depth`", "set it to at most 3"),
    ("grid depth deeper than the model", [("grid.0.defense_params", {"depth": [2, 7]})],
     "`grid[0].defense_params.depth[1]`", "set it to at most 3"),
    ("cbpt prompt too long", [("defenses.cbpt.n_ctx", 12)],
     "`defenses.cbpt.n_ctx`", "set n_ctx to at most 9"),
    ("coop prompt too long", [("defenses.coop.n_ctx", 20)],
     "`defenses.coop.n_ctx`", "set n_ctx to at most 9"),
    ("wrong weight sha256", [("model.weights", "{weights}"), ("model.sha256", ZEROS)],
     "`model.sha256`", "fix the checksum (sha256sum "),
    ("malformed sha256", [("model.weights", "{weights}"), ("model.sha256", "abc123")],
     "`model.sha256`", "expected pattern"),
    ("weights without sha256", [("model.weights", "{weights}")],
     "`model.sha256`", "put the file's sha256sum there"),
    ("weights file missing", [("model.weights", "/nonexistent/clip.safetensors"),
                              ("model.sha256", ZEROS)],
     "`model.weights`", "point it at a local clipbd safetensors"),
    ("unknown architecture", [("model.arch", "ViT-Q-99")],
     "`model.arch`", "use a tiny one (clipbd-tiny"),
    ("misspelt top-level key", [("grdi", [])], "`grdi`", "remove it or fix its spelling"),
    ("misspelt attack hyperparameter", [("attacks.badnet.patch_sise", 3)],
     "`attacks.badnet.patch_sise`", "remove it or fix its spelling"),
    ("poison rate above 1", [("attacks.badnet.poison_rate", 1.5)],
     "`attacks.badnet.poison_rate`", "expected maximum 1"),
    ("unknown dataset in the grid", [("grid.0.datasets", ["shapez"])],
     "`grid[0].datasets[0]`", "defined under `datasets`: shapes"),
    ("unknown pretrain dataset", [("pretrain.datasets", ["cifar"])],
     "`pretrain.datasets[0]`", "defined: shapes"),
    ("grid override nobody owns", [("grid.0.attack_params", {"alpha": [0.1]})],
     "`grid[0].attack_params.alpha`", "see `attacks` in the config"),
    ("unknown tune dataset", [("grid.0.defense_params", {"tune_dataset": ["cifar"]})],
     "`grid[0].defense_params.tune_dataset[0]`", "defined: shapes"),
    ("synthetic without size", [("datasets.shapes.n_train", DELETE)],
     "`datasets.shapes.n_train`", "set a number of images"),
    ("batch of one", [("pretrain.batch_size", 1)], "`pretrain.batch_size`", "expected minimum 2"),
    ("unknown dataset kind", [("datasets.shapes.kind", "imagenet")],
     "`datasets.shapes.kind`", "expected enum"),
    ("grid block without attacks", [("grid.0.attacks", DELETE)], "`grid[0]`", "add it"),
    ("oracle trigger for the clean model", [("defenses.cbpt.oracle_trigger", True)],
     "`defenses.cbpt.oracle_trigger`", "leave clean out of that block"),
]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    p = tmp_path_factory.mktemp("w") / "clip.safetensors"
    p.write_bytes(b"not checked here: only its sha256 is")
    return str(p)


def _bad(mutations, weights):
    cfg = copy.deepcopy(BASE)
    for dotted, value in mutations:
        _set(cfg, dotted, value.format(weights=weights) if isinstance(value, str) else value)
    return cfg


def test_base_config_is_valid():
    cfg = resolve(copy.deepcopy(BASE))
    assert cfg["defenses"]["rvpt"]["depth"] == 3 and cfg["defenses"]["cbpt"]["n_ctx"] == 4


def test_at_least_20_cases():
    assert len(CASES) >= 20 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,mutations,key,fix", CASES, ids=[c[0] for c in CASES])
def test_bad_config_names_key_and_fix(name, mutations, key, fix, weights):
    with pytest.raises(ConfigError) as err:
        resolve(_bad(mutations, weights))
    msg = str(err.value)
    assert key in msg, msg
    assert fix in msg, msg


def test_limits_are_exact(weights):
    """The largest allowed depth and n_ctx pass; one more fails."""
    resolve(_bad([("defenses.rvpt.depth", 3), ("defenses.cbpt.n_ctx", 9)], weights))
    with pytest.raises(ConfigError, match="n_ctx"):
        resolve(_bad([("defenses.cbpt.n_ctx", 10)], weights))


def test_prompt_limit_matches_the_prompt_wrapper():
    """The config check's n_ctx limit (9: "sudo " and "horizontal bar." take 2 and 3 of the
    16 tokens) is the one TextPrompt enforces when it builds the TrojVQA-keyed prompts."""
    from clipbd.data.synthetic import CLASSES
    from clipbd.models import clip
    from clipbd.models.text_prompt import TextPrompt

    model, tok = clip.create("clipbd-tiny-vit"), clip.tokenizer("clipbd-tiny-vit")
    TextPrompt(model, tok, CLASSES, n_ctx=9)._tokens("sudo ")
    with pytest.raises(ValueError, match="lower n_ctx"):
        TextPrompt(model, tok, CLASSES, n_ctx=10)._tokens("sudo ")


@pytest.mark.integration
@pytest.mark.parametrize("mutations,key", [
    ([("defenses.rvpt.depth", 5)], "`defenses.rvpt.depth`"),
    ([("grid.0.attacks", ["clean", "badnett"])], "`grid[0].attacks[1]`"),
])
def test_snakemake_reports_before_any_job(tmp_path, mutations, key):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_bad(mutations, "")))
    res = snakemake(tmp_path, "-n", timeout=300)
    assert res.returncode != 0
    err = res.stderr + res.stdout
    assert "clipbd config error" in err and key in err, err[-3000:]
    assert not (tmp_path / "results").exists()
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)
