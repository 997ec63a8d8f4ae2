"""clipbd.grid: grid blocks -> runs, variants, deduplication, invalid pairs."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from clipbd import config, grid
from clipbd.grid import Run

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


SMALL = [{"datasets": ["fmnist"], "attacks": ["clean", "badnet"],
          "defenses": ["none", "linear_probe"], "shots": [16], "seeds": [0]}]


@pytest.fixture(scope="module")
def resolved():
    """The embedded config with a 2 x 2 grid (clean/badnet x none/linear probe)."""
    return config.resolve(dict(copy.deepcopy(RAW), grid=SMALL))


@pytest.fixture
def cfg(resolved):
    return copy.deepcopy(resolved)


def _tuples(runs):
    return sorted((r.attack, r.defense, r.shots, r.seed) for r in runs)


FULL = yaml.safe_load((ROOT / "config" / "full.yaml").read_text())
ATTACKS = {"badnet", "blended", "sig", "wanet", "ssba", "trojvqa", "badclip"}


def test_default_grid_is_every_attack_against_the_prompt_defenses():
    runs = grid.expand(config.resolve(copy.deepcopy(RAW)))
    # 7 attacks x {none, cbpt, rvpt} + the clean model without defense
    assert len(runs) == 7 * 3 + 1
    assert {(r.attack, r.defense) for r in runs} == (
        {(a, d) for a in ATTACKS for d in ("none", "cbpt", "rvpt")} | {("clean", "none")})
    assert {r.shots for r in runs if r.defense != "none"} == {16}


def test_full_grid_is_every_attack_by_every_defense():
    runs = grid.expand(config.resolve(config.study([ROOT / "config" / "full.yaml"])))
    # 8 models (clean + 7 attacks) x 9 defenses, less TrojVQA x {linear probe, FST}, plus
    # CBPT with each attack's real trigger (the oracle ablation)
    assert len(runs) == 8 * 9 - 2 + 7
    oracle = [r for r in runs if r.defense_variant != "default"]
    assert {r.attack for r in oracle} == ATTACKS and {r.defense for r in oracle} == {"cbpt"}
    assert {r.defense_variant for r in oracle} == {"oracle_trigger~true"}
    assert {r.attack for r in runs} == ATTACKS | {"clean"}
    assert ("trojvqa", "linear_probe") not in {(r.attack, r.defense) for r in runs}
    assert {r.shots for r in runs if r.defense != "none"} == {16}
    # it extends the default: the same models, data and settings
    assert set(FULL) == {"extends", "grid"} and FULL["extends"] == "config.yaml"


def test_small_grid_has_four_runs(cfg):
    runs = grid.expand(cfg)
    assert len(runs) == 4
    assert _tuples(runs) == [("badnet", "linear_probe", 16, 0), ("badnet", "none", 0, 0),
                             ("clean", "linear_probe", 16, 0), ("clean", "none", 0, 0)]
    assert {r.dataset for r in runs} == {"fmnist"}
    assert {(r.attack_variant, r.defense_variant) for r in runs} == {("default", "default")}


def test_defense_none_ignores_shots_and_evaluates_each_seeds_backdoor(cfg):
    cfg["seed"] = 7
    cfg["grid"][0].update(shots=[4, 8], seeds=[1, 2, 3])
    runs = grid.expand(cfg)
    none = [r for r in runs if r.defense == "none"]
    probe = [r for r in runs if r.defense == "linear_probe"]
    # the backdoored model of each seed; the clean model (pre-trained at the global seed) once
    assert sorted((r.attack, r.shots, r.seed) for r in none) == [
        ("badnet", 0, 1), ("badnet", 0, 2), ("badnet", 0, 3), ("clean", 0, 7)]
    assert len(probe) == 2 * 2 * 3
    assert {(r.shots, r.seed) for r in probe} == {(k, s) for k in (4, 8) for s in (1, 2, 3)}


def test_run_key():
    r = Run("fmnist", "badnet", "poison_rate~0.05", "linear_probe", "default", 16, 2)
    assert r.key == "fmnist/badnet/poison_rate~0.05/linear_probe/default/shots~16/seed~2"


@pytest.mark.parametrize("params,encoded", [
    ({}, "default"),
    ({"poison_rate": 0.05, "location": "corner"}, "location~corner,poison_rate~0.05"),
    ({"patch_size": 3}, "patch_size~3"),
    ({"fixed_pattern": False, "lr": 0.01}, "fixed_pattern~false,lr~0.01"),
])
def test_encode_decode_variant(params, encoded):
    assert grid.encode_variant(params) == encoded
    back = grid.decode_variant(encoded)
    assert back == params
    assert [type(v) for v in back.values()] == [type(params[k]) for k in back]


def test_decode_variant_float_type():
    out = grid.decode_variant("location~corner,poison_rate~0.05")
    assert out == {"location": "corner", "poison_rate": 0.05}
    assert isinstance(out["poison_rate"], float)


def test_variant_round_trip_small_float():
    assert grid.decode_variant(grid.encode_variant({"lr": 1e-05})) == {"lr": 1e-05}


def test_attack_params_make_variants(cfg):
    cfg["grid"][0]["attack_params"] = {"poison_rate": [0.01, 0.05]}
    runs = grid.expand(cfg)
    badnet = [r for r in runs if r.attack == "badnet"]
    clean = [r for r in runs if r.attack == "clean"]
    assert len(badnet) == 4 and len(clean) == 2 and len(runs) == 6
    assert sorted({r.attack_variant for r in badnet}) == ["poison_rate~0.01", "poison_rate~0.05"]
    assert {r.attack_variant for r in clean} == {"default"}
    assert len({r.key for r in runs}) == 6


def test_params_product_and_defense_params(cfg):
    block = cfg["grid"][0]
    block["attack_params"] = {"poison_rate": [0.01, 0.05], "location": ["corner", "center"]}
    block["defense_params"] = {"lr": [0.1, 0.01, 0.001]}
    runs = grid.expand(cfg)
    bl = [r for r in runs if r.attack == "badnet" and r.defense == "linear_probe"]
    assert len(bl) == 4 * 3
    assert "location~center,poison_rate~0.05" in {r.attack_variant for r in bl}
    assert {r.defense_variant for r in bl} == {"lr~0.1", "lr~0.01", "lr~0.001"}
    # `none` owns no `lr`: its runs keep the default defense variant
    assert {r.defense_variant for r in runs if r.defense == "none"} == {"default"}
    assert len(runs) == 12 + 4 + 3 + 1


def test_duplicates_across_blocks_are_removed(cfg):
    first = copy.deepcopy(cfg["grid"][0])
    second = copy.deepcopy(first)
    second["attacks"] = ["badnet"]
    second["shots"] = [16, 4]
    cfg["grid"] = [first, second]
    runs = grid.expand(cfg)
    assert len(runs) == 5  # 4 from the first block + badnet/linear_probe/shots 4
    assert len({r.key for r in runs}) == 5
    assert ("badnet", "linear_probe", 4, 0) in _tuples(runs)


def test_invalid_pairs_filtered(cfg, monkeypatch):
    real = grid.invalid
    monkeypatch.setattr(grid, "invalid", lambda a, d: "test reason" if (a, d) == (
        "badnet", "linear_probe") else real(a, d))
    runs = grid.expand(cfg)
    assert _tuples(runs) == [("badnet", "none", 0, 0), ("clean", "linear_probe", 16, 0),
                             ("clean", "none", 0, 0)]


def test_invalid_pairs_come_from_the_classes():
    # a dual-key attack (TrojVQA) with a defense whose classifier drops the text encoder
    from clipbd import attacks, defenses

    pairs = {(a, d): grid.invalid(a, d) for a in attacks.REGISTRY.names()
             for d in defenses.REGISTRY.names() if grid.invalid(a, d)}
    dual = [a for a in attacks.REGISTRY.names() if attacks.REGISTRY.get(a).dual_key]
    headless = [d for d in defenses.REGISTRY.names() if not defenses.REGISTRY.get(d).text_encoder]
    assert sorted(pairs) == [(a, d) for a in dual for d in headless]
    assert {("trojvqa", "fst"), ("trojvqa", "linear_probe")} <= set(pairs)
    assert pairs["trojvqa", "fst"] == "FST drops the text encoder, so the text key of TrojVQA is gone"
    assert all(grid.invalid("clean", d) == "" for d in defenses.REGISTRY.names())


def test_resolved_params(cfg):
    base = grid.resolved_params(cfg, "attack", "badnet", "default")
    assert base == {"poison_rate": 0.05, "patch_size": 3, "location": "corner",
                    "fixed_pattern": True, "noise_overflow": "clamp"}
    over = grid.resolved_params(cfg, "attack", "badnet", "location~random,poison_rate~0.01")
    assert over == {"poison_rate": 0.01, "patch_size": 3, "location": "random",
                    "fixed_pattern": True, "noise_overflow": "clamp"}
    assert cfg["attacks"]["badnet"]["poison_rate"] == 0.05  # config untouched
    lp = grid.resolved_params(cfg, "defense", "linear_probe", "epochs~5")
    assert lp == {"lr": 0.01, "momentum": 0.9, "batch_size": 32, "epochs": 5,
                  "without_target_class": False, "tune_dataset": None}
    assert grid.resolved_params(cfg, "attack", "clean", "default") == {}
    assert grid.resolved_params(cfg, "defense", "none", "default") == {}


def test_tuning_options_make_variants_of_trained_defenses_only(cfg):
    cfg["grid"][0]["defense_params"] = {"without_target_class": [False, True]}
    runs = grid.expand(cfg)
    probe = sorted(r.defense_variant for r in runs if r.defense == "linear_probe")
    assert probe == ["without_target_class~false", "without_target_class~false",
                     "without_target_class~true", "without_target_class~true"]
    assert {r.defense_variant for r in runs if r.defense == "none"} == {"default"}
    assert grid.resolved_params(cfg, "defense", "linear_probe",
                                "without_target_class~true")["without_target_class"] is True


def test_tune_dataset_only_for_defenses_that_transfer(cfg, monkeypatch):
    cfg["grid"][0]["defense_params"] = {"tune_dataset": ["shapes"]}
    # the linear probe's head is class-specific: tuned on shapes it cannot classify fmnist
    assert _tuples(grid.expand(cfg)) == [("badnet", "none", 0, 0), ("clean", "none", 0, 0)]
    from clipbd.defenses.linear_probe import LinearProbe

    monkeypatch.setattr(LinearProbe, "transfers", True)
    runs = grid.expand(cfg)
    assert {r.defense_variant for r in runs if r.defense == "linear_probe"} == {"tune_dataset~shapes"}
    same = dict(cfg, grid=[dict(cfg["grid"][0], defense_params={"tune_dataset": ["fmnist"]})])
    monkeypatch.setattr(LinearProbe, "transfers", False)
    assert len(grid.expand(same)) == 4  # tuning on the evaluated dataset is always valid


def test_unknown_tune_dataset_is_a_config_error(cfg):
    raw = copy.deepcopy(RAW)
    raw["grid"][0]["defense_params"] = {"tune_dataset": ["imagenet"]}
    with pytest.raises(config.ConfigError,
                       match=r"`grid\[0\]\.defense_params\.tune_dataset\[0\]`: unknown dataset 'imagenet'"):
        config.resolve(raw)
