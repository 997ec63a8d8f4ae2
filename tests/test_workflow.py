"""The real workflow, end to end, on a tiny config (pytest -m integration selects these)."""
from __future__ import annotations

import math
import shutil
from collections import Counter

import pandas as pd
import pytest
import yaml

from clipbd.artifacts import read_json, sha256_file
from workflow_util import ROOT, planned_jobs, snakemake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(tiny, tmp_path_factory):
    """The tiny study (tests/data/tiny.yaml) as the DVC tests ran it once per test process
    (tests/dvc_util.py), copied with its Snakemake metadata into a folder of its own: the same
    config and the same code, so this module needs no run of its own, and nothing it edits
    reaches the DVC tests' repositories."""
    origin = tiny.origin
    work = tmp_path_factory.mktemp("study")
    for part in ("results", "logs", ".snakemake/metadata"):
        shutil.copytree(origin / part, work / part)
    shutil.copy(ROOT / "tests" / "data" / "tiny.yaml", work / "config.yaml")
    return work


def test_tidy_table(study):
    df = pd.read_csv(study / "results" / "tables" / "metrics.csv")
    assert list(df.columns[:9]) == ["dataset", "attack", "defense", "shots", "seed",
                                    "ca", "asr", "asr_all", "pa"]
    assert sorted(zip(df.attack, df.defense, df.shots)) == [
        ("badnet", "cbpt", 4), ("badnet", "linear_probe", 4), ("badnet", "none", 0),
        ("badnet", "rvpt", 4), ("clean", "linear_probe", 4), ("clean", "none", 0),
        ("trojvqa", "cbpt", 4), ("trojvqa", "none", 0), ("trojvqa", "rvpt", 4)]
    rows = {(r.attack, r.defense): r for r in df.itertuples()}
    clean, bd = rows[("clean", "none")], rows[("badnet", "none")]
    # 10 classes: chance is 0.10. 80 steps of pre-training on 12k images reach ~0.68.
    assert clean.ca > 0.5
    assert pd.isna(clean.asr)
    # 5% poisoned pairs, patch in the corner: the tiny CLIP learns the trigger.
    assert bd.asr >= 0.8
    assert bd.ca > clean.ca - 0.1
    for col in ("ca", "asr", "asr_all", "pa"):
        vals = df[col].dropna()
        assert ((vals >= 0) & (vals <= 1)).all()
    assert (df.poison_rate.dropna() == 0.05).all()
    # dual key: each key alone is measured for TrojVQA only
    troj = df[df.attack == "trojvqa"]
    for col in ("asr_image_key", "asr_text_key"):
        assert troj[col].between(0, 1).all() and len(troj) == 3
        assert df[df.attack != "trojvqa"][col].isna().all()


def test_deltas_hold_only_what_each_defense_tunes(study):
    from clipbd.artifacts import load_tensors

    runs = study / "results" / "defenses" / "fmnist"
    keys = {d.parts[-5] + "/" + d.parts[-7]: sorted(load_tensors(d)[0])
            for d in runs.rglob("delta.safetensors")}
    assert keys == {
        "linear_probe/clean": ["head.bias", "head.weight"],
        "linear_probe/badnet": ["head.bias", "head.weight"],
        "cbpt/badnet": ["ctx", "trigger.mask", "trigger.pattern"],
        "cbpt/trojvqa": ["ctx", "trigger.mask", "trigger.pattern"],
        "rvpt/badnet": ["blocks", "prompts"],
        "rvpt/trojvqa": ["blocks", "prompts"]}


def test_nothing_left_to_do(study):
    assert planned_jobs(study) == {}


def test_sidecars_match_artifacts(study):
    arts = sorted((study / "results").rglob("*.safetensors"))
    kinds = Counter(a.relative_to(study / "results").parts[0] for a in arts)
    # 2x2 splits, clean + 2 backdoored models, 2 triggers, 2x2 poisoned sets, 6 deltas,
    # feature caches of the clean model and of both backdoored ones
    assert {k: kinds[k] for k in ("data", "models", "triggers", "poisoned", "defenses",
                                  "features")} == {"data": 4, "models": 3, "triggers": 2,
                                                   "poisoned": 4, "defenses": 6, "features": 3}
    assert (study / "results/triggers/fmnist/trojvqa/default/seed~0/learned.safetensors").is_file()
    for art in arts:
        side = read_json(str(art) + ".json")
        assert side["sha256"] == sha256_file(art)
        assert side["code"] and "torch" in side["packages"]
        for path, digest in side["inputs"].items():
            assert digest == sha256_file(study / path), (art, path)
    poisoned = read_json(study / "results/poisoned/fmnist/badnet/default/seed~0/train.safetensors.json")
    assert poisoned["n_poisoned"] == 300  # 5% of 6000


def test_text_side_evaluations_read_the_shared_feature_cache(study):
    feats = "results/features/fmnist/badnet/default/seed~0/features.safetensors"
    for defense, cached in (("none", True), ("linear_probe", True), ("cbpt", True),
                            ("rvpt", False)):
        shots = 0 if defense == "none" else 4  # no defense: nothing tuned, shots~0
        m = read_json(study / f"results/metrics/fmnist/badnet/default/{defense}/default/"
                              f"shots~{shots}/seed~0/metrics.json")
        assert (feats in m["provenance"]["inputs"]) == cached, defense


def test_figure_and_markdown(study):
    png = study / "results" / "figures" / "overview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (study / "results" / "figures" / "overview.pdf").read_bytes()[:4] == b"%PDF"
    md = (study / "results" / "tables" / "metrics.md").read_text()
    assert md.count("\n| fmnist |") == 9
    assert "| defense | badnet | trojvqa | average |" in md
    gallery = study / "results" / "figures" / "gallery"
    figs = ["fmnist_perturbations.pdf", "fmnist_perturbations.png",
            "fmnist_triggers.pdf", "fmnist_triggers.png"]
    assert sorted(p.name for p in gallery.iterdir()) == sorted(figs + [f + ".json" for f in figs])


def test_loss_curves_of_every_training_job(study):
    # the sidecars keep each loop's loss per step; the report draws the ones behind the metrics
    clean = read_json(study / "results" / "models" / "clean" / "model.safetensors.json")
    c = clean["loss_curves"]["train"]
    assert len(c["loss"]) == math.ceil(c["n_steps"] / c["chunk"]) <= 200 and c["n_steps"] > 0
    if c["chunk"] == 1:  # every step kept: its last point is the final loss
        assert c["loss"][-1] == pytest.approx(clean["final_loss"])
    df = pd.read_csv(study / "results" / "tables" / "loss_curves.csv")
    assert {"pretrain", "backdoor", "defend"} <= set(df.stage)
    assert df.groupby(["artifact", "loop"]).size().max() <= 200
    assert (study / "results" / "figures" / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (study / "results" / "figures" / "loss_curves.pdf").read_bytes()[:4] == b"%PDF"


def test_hyperparameter_edit_reruns_exactly_its_jobs(study):
    cfg = yaml.safe_load((study / "config.yaml").read_text())
    cfg["defenses"]["linear_probe"]["epochs"] = 11
    (study / "config.yaml").write_text(yaml.safe_dump(cfg))
    try:
        # + the paper tables: 5 from metrics.csv, RVPT Table 9 from the deltas (not the
        # probes and their figures: linear probes are not probed)
        assert planned_jobs(study) == {"defend": 2, "evaluate": 2, "aggregate": 1,
                                       "figure": 1, "loss_curves": 1, "paper_table": 6,
                                       "paper_captions": 1, "all": 1}
    finally:
        cfg["defenses"]["linear_probe"]["epochs"] = 10
        (study / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert planned_jobs(study) == {}


def test_tuning_on_another_dataset_without_the_target_class_is_planned(study):
    cfg = yaml.safe_load((study / "config.yaml").read_text())
    extra = {"datasets": ["fmnist"], "attacks": ["badnet"], "defenses": ["rvpt", "cbpt"],
             "shots": [4], "defense_params": {"tune_dataset": ["shapes"],
                                              "without_target_class": [True]}}
    (study / "extra.yaml").write_text(yaml.safe_dump({**cfg, "grid": cfg["grid"] + [extra]}))
    # RVPT's prompts transfer (a new few-shot draw on shapes); CBPT's class-wise prompts do not
    # the paper tables from metrics.csv rerun, and RVPT Tables 4-6 join them
    assert planned_jobs(study, "--configfile", str(study / "extra.yaml")) == {
        "fewshot": 1, "defend": 1, "evaluate": 1, "aggregate": 1, "figure": 1, "loss_curves": 1,
        "paper_table": 5 + 3, "paper_captions": 1, "all": 1}
    res = snakemake(study, "-n", "--configfile", str(study / "extra.yaml"))
    run = "rvpt/tune_dataset~shapes,without_target_class~true/shots~4/seed~0"
    assert "results/data/shapes/fewshot/shots~4/seed~0.json" in res.stdout
    assert f"results/defenses/fmnist/badnet/default/{run}/delta.safetensors" in res.stdout


def test_cbpt_with_the_real_trigger(study):
    """The oracle ablation: the defend job reads the attack's stored trigger and fingerprints
    the attack's code; the plain CBPT runs are untouched."""
    from clipbd.fingerprint import defend_files, fingerprint

    cfg = yaml.safe_load((study / "config.yaml").read_text())
    extra = {"datasets": ["fmnist"], "attacks": ["badnet", "trojvqa"], "defenses": ["cbpt"],
             "shots": [4], "seeds": [0], "defense_params": {"oracle_trigger": [True]}}
    (study / "oracle.yaml").write_text(yaml.safe_dump({**cfg, "grid": cfg["grid"] + [extra]}))
    run = "cbpt/oracle_trigger~true/shots~4/seed~0"
    targets = [f"results/metrics/fmnist/{a}/default/{run}/metrics.json"
               for a in ("badnet", "trojvqa")]
    args = (*targets, "--configfile", str(study / "oracle.yaml"))
    assert planned_jobs(study, *args) == {"defend": 2, "evaluate": 2}
    res = snakemake(study, *args)
    assert res.returncode == 0, res.stderr[-5000:]
    for attack, trigger in (("badnet", "trigger"), ("trojvqa", "learned")):
        side = read_json(study / f"results/defenses/fmnist/{attack}/default/{run}"
                               "/delta.safetensors.json")
        path = f"results/triggers/fmnist/{attack}/default/seed~0/{trigger}.safetensors"
        assert side["inputs"][path] == sha256_file(study / path)
        files = defend_files("cbpt", attack, True)
        assert f"attacks/{attack}.py" in files and "poison.py" in files
        assert side["code"] == fingerprint("defend", *files)
        assert side["code"] != fingerprint("defend", *defend_files("cbpt", attack, False))
        metrics = read_json(study / f"results/metrics/fmnist/{attack}/default/{run}/metrics.json")
        assert metrics["metrics"]["defense_variant"] == "oracle_trigger~true"
    assert planned_jobs(study) == {}


def test_bad_config_fails_before_any_job(tmp_path):
    cfg = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    cfg["grid"][0]["attacks"] = ["clean", "badnett"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake(tmp_path, "-n")
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "config key `grid[0].attacks[1]`: unknown attack 'badnett'" in out
    assert not (tmp_path / "results").exists()


def test_lint_passes():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Congratulations" in res.stdout + res.stderr
