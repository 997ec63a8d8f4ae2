"""Partial re-runs: a code or hyperparameter edit plans exactly the jobs that depend on it.

All edits are made in a fresh clone of a pushed tiny study after scripts/dvc_pull.sh
(tests/dvc_util.py): its files have new mtimes and its Snakemake metadata comes from the pull
script only, the hardest case. The clone's src/ is what its workflow imports and fingerprints.
Jobs are 'rule:wildcards', e.g.
'defend:<dataset>/<attack>/<attack_variant>/<defense>/<defense_variant>/<shots>/<seed>'.
"""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import yaml

from dvc_util import planned
from workflow_util import commented

pytestmark = pytest.mark.integration

# Rules of the chain up to the metrics; their jobs are listed exactly below. Everything after
# them (tables, figures, probes, paper items) must be exactly the plan of forcing the changed jobs.
CHAIN = {"prepare_data", "pretrain", "trigger", "learn_trigger", "poison", "poison_test",
         "backdoor", "fewshot", "defend", "evaluate"}


def attack_chain(attack, first="trigger", seed=0):
    rules = (first, "poison", "poison_test", "backdoor")
    return [f"{rule}:fmnist/{attack}/default/{seed}" for rule in rules]


def runs(rule, attack, *defenses, seed=0):
    return [f"{rule}:fmnist/{attack}/default/{d}/default/{0 if d == 'none' else 4}/{seed}"
            for d in defenses]


def attack_outputs(attack, first="trigger"):
    """Outputs of the jobs that run an attack's code: trigger (or learned trigger), poisoning."""
    trig = "learned" if first == "learn_trigger" else "trigger"
    return [f"results/triggers/fmnist/{attack}/default/seed~0/{trig}.safetensors",
            f"results/poisoned/fmnist/{attack}/default/seed~0/train.safetensors",
            f"results/poisoned/fmnist/{attack}/default/seed~0/test.safetensors"]


def run_outputs(attack, defense, *rules):
    run = f"fmnist/{attack}/default/{defense}/default/shots~{0 if defense == 'none' else 4}/seed~0"
    files = {"defend": f"results/defenses/{run}/delta.safetensors",
             "evaluate": f"results/metrics/{run}/metrics.json"}
    return [files[r] for r in rules]


def assert_reruns(clone, jobs, chain, changed):
    """`jobs` hold exactly `chain` in the chain's rules, and are exactly what forcing the
    `changed` outputs (the jobs whose code or params the edit touched) plans downstream."""
    assert sorted(j for j in jobs if j.split(":")[0] in CHAIN) == sorted(chain)
    assert {"aggregate", "all"} <= set(jobs)
    assert jobs == planned(clone, "--forcerun", *changed)


@pytest.fixture(scope="module")
def clone(tiny):
    return tiny.clone


@contextmanager
def appended(path, text="\n_EDITED = True  # an edit of what the file does\n"):
    old = path.read_text()
    path.write_text(old + text)
    try:
        yield
    finally:
        path.write_text(old)


@contextmanager
def edited(path, old_text, new_text):
    old = path.read_text()
    assert old_text in old
    path.write_text(old.replace(old_text, new_text))
    try:
        yield
    finally:
        path.write_text(old)


@contextmanager
def config_edit(clone, section, name, key, value):
    path = clone / "config" / "config.yaml"
    old = path.read_text()
    cfg = yaml.safe_load(old)
    cfg[section][name][key] = value
    path.write_text(yaml.safe_dump(cfg))
    try:
        yield
    finally:
        path.write_text(old)


def test_fresh_clone_plans_nothing(clone):
    assert planned(clone) == []


BADNET = (attack_chain("badnet") + runs("defend", "badnet", "cbpt", "linear_probe", "rvpt")
          + runs("evaluate", "badnet", "cbpt", "linear_probe", "none", "rvpt"))


def test_editing_one_attack_file_reruns_that_attack_only(clone):
    with appended(clone / "src" / "clipbd" / "attacks" / "badnet.py"):
        jobs = planned(clone)
    assert_reruns(clone, jobs, BADNET, attack_outputs("badnet"))
    assert "gallery:fmnist" in jobs and not any("trojvqa" in j for j in jobs)


def test_editing_a_helper_reruns_exactly_the_attacks_importing_it(clone):
    # attacks/patch.py is imported by TrojVQA (and BadCLIP), not by BadNet
    with appended(clone / "src" / "clipbd" / "attacks" / "patch.py"):
        jobs = planned(clone)
    assert_reruns(clone, jobs, attack_chain("trojvqa", first="learn_trigger")
                  + runs("defend", "trojvqa", "cbpt", "rvpt")
                  + runs("evaluate", "trojvqa", "cbpt", "none", "rvpt"),
                  attack_outputs("trojvqa", first="learn_trigger"))


def test_editing_one_defense_file_reruns_that_defense_only(clone):
    with appended(clone / "src" / "clipbd" / "defenses" / "rvpt.py"):
        jobs = planned(clone)
    assert_reruns(clone, jobs, runs("defend", "badnet", "rvpt") + runs("defend", "trojvqa", "rvpt")
                  + runs("evaluate", "badnet", "rvpt") + runs("evaluate", "trojvqa", "rvpt"),
                  run_outputs("badnet", "rvpt", "defend", "evaluate")
                  + run_outputs("trojvqa", "rvpt", "defend", "evaluate"))


def test_editing_a_stage_module_reruns_that_stage(clone):
    evaluated = {"clean": ("linear_probe", "none"), "trojvqa": ("cbpt", "none", "rvpt"),
                 "badnet": ("cbpt", "linear_probe", "none", "rvpt")}
    with appended(clone / "src" / "clipbd" / "metrics.py"):
        jobs = planned(clone)
    assert_reruns(clone, jobs, [j for a, ds in evaluated.items() for j in runs("evaluate", a, *ds)],
                  [f for a, ds in evaluated.items() for d in ds
                   for f in run_outputs(a, d, "evaluate")])


def test_editing_an_attack_hyperparameter_reruns_its_jobs(clone):
    # the trigger job has no input files: only its recorded params can tell it changed
    with config_edit(clone, "attacks", "badnet", "patch_size", 4):
        jobs = planned(clone)
    assert_reruns(clone, jobs, BADNET, attack_outputs("badnet"))


def test_editing_a_defense_hyperparameter_reruns_its_jobs(clone):
    with config_edit(clone, "defenses", "cbpt", "epochs", 4):
        jobs = planned(clone)
    assert_reruns(clone, jobs, runs("defend", "badnet", "cbpt") + runs("defend", "trojvqa", "cbpt")
                  + runs("evaluate", "badnet", "cbpt") + runs("evaluate", "trojvqa", "cbpt"),
                  run_outputs("badnet", "cbpt", "defend", "evaluate")
                  + run_outputs("trojvqa", "cbpt", "defend", "evaluate"))


# What a job that only reads metrics (or the grid's plan) may be: tables, figures, captions.
REPORT = {"aggregate", "figure", "loss_curves", "paper_table", "paper_figure", "paper_captions",
          "all"}


def test_adding_a_seed_plans_that_seed_s_chain_and_reuses_seed_0(clone):
    path = clone / "config" / "config.yaml"
    old = path.read_text()
    cfg = yaml.safe_load(old)
    assert cfg["grid"][1]["attacks"] == ["badnet", "trojvqa"] and cfg["grid"][1]["seeds"] == [0]
    cfg["grid"][1]["seeds"] = [0, 1]
    path.write_text(yaml.safe_dump(cfg))
    try:
        jobs = planned(clone)
    finally:
        path.write_text(old)
    seed1 = (attack_chain("badnet", seed=1) + attack_chain("trojvqa", "learn_trigger", seed=1)
             + ["fewshot:fmnist/4/1"]
             + [j for a in ("badnet", "trojvqa") for j in runs("defend", a, "cbpt", "rvpt", seed=1)
                + runs("evaluate", a, "cbpt", "none", "rvpt", seed=1)])
    assert sorted(j for j in jobs if j.split(":")[0] in CHAIN) == sorted(seed1)
    # the seed-1 feature caches of `none`, then only what reads the metrics: nothing of seed 0
    assert sorted(j for j in jobs if j.startswith("features:")) == [
        "features:fmnist/badnet/default/1", "features:fmnist/trojvqa/default/1"]
    assert {j.split(":")[0] for j in jobs} - CHAIN - {"features"} <= REPORT
    assert {"aggregate", "paper_captions", "all"} <= set(jobs)


def test_renaming_a_method_in_the_tables_rebuilds_only_the_paper_items(clone):
    """A title is a DISPLAY fact (clipbd.fingerprint): no backdoor or defense reruns for it,
    and every paper table and figure, which print it, is rebuilt (then the captions file,
    which lists them)."""
    path = clone / "src" / "clipbd" / "attacks" / "badnet.py"
    with edited(path, 'title = "BadNet"', 'title = "BadNets"'):
        jobs = planned(clone)
    paper = clone / "results" / "paper"
    built = [f"paper_table:{p.relative_to(paper).with_suffix('').as_posix()}"
             for p in paper.rglob("*.csv")]
    built += [f"paper_figure:{p.relative_to(paper).with_suffix('').as_posix()}"
              for p in paper.rglob("*.png")]
    assert len(built) >= 3 and any(j.startswith("paper_figure") for j in built)
    assert jobs == sorted(["all", "paper_captions", *built])


def test_comment_and_docstring_edits_of_every_file_plan_nothing(clone):
    """Code fingerprints hash what the code does (clipbd.fingerprint.code_text): rewording
    every docstring-led module and commenting every file under src/ reruns no job."""
    paths = sorted((clone / "src" / "clipbd").rglob("*.py"))
    old = {p: p.read_text() for p in paths}
    try:
        for p in paths:
            p.write_text(commented(old[p]))
        assert planned(clone) == []
    finally:
        for p in paths:
            p.write_text(old[p])


def test_undoing_the_edits_plans_nothing(clone):
    assert planned(clone) == []
