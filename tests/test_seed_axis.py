"""The grid's seed axis covers the whole chain: trigger, poisoning, backdoor, few-shot draw and
defense of seed s are built with seed s, under `seed~<s>/`; pre-training keeps the global seed.

Dry runs (`snakemake -n -p`) of small configs: which jobs exist per seed, and the `--cfg` each
job is handed (what its step seeds itself from). config/seeds.yaml is planned job by job.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest
import torch
import yaml

from clipbd import attacks, config
from clipbd.verbs import trigger as trigger_verb
from clipbd.artifacts import load_tensors
from clipbd.audit import expect
from workflow_util import ROOT, SNAKEMAKE, micro_study, snakemake

pytestmark = pytest.mark.integration

CHAIN_RULES = ("trigger", "poison", "poison_test", "backdoor")


def study_of(seed: int, grid_seed: int) -> dict:
    """BadNet on shapes against none and CoOp (prompts that fit the tiny text encoder)."""
    study = micro_study(seed=seed, steps=2, attack="badnet", defense="coop", grid_seed=grid_seed)
    study["defenses"]["coop"]["n_ctx"] = 4
    return study


def dry_run(work, *args) -> dict[str, list[tuple[str, dict]]]:
    """rule -> [(wildcard values joined by /, the job's --cfg or {})] of `snakemake -n -p`."""
    res = snakemake(work, "-n", "-p", *args, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    text = res.stdout if "rule " in res.stdout else res.stderr
    jobs: dict[str, list] = {}
    for block in re.split(r"^(?=[ \t]*(?:local)?rule \w+:$)", text, flags=re.M)[1:]:
        name = re.match(r"\s*(?:local)?rule (\w+):", block).group(1)
        wild = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        values = [kv.split("=", 1)[1] for kv in re.split(r", (?=\w+=)", wild.group(1))] if wild else []
        cmd = re.search(r"^\s*(?:Shell command: )?(python -m clipbd .*)$", block, flags=re.M)
        words = shlex.split(cmd.group(1)) if cmd else []
        cfg = json.loads(words[words.index("--cfg") + 1]) if "--cfg" in words else {}
        if "--model" in words:  # the model a job reads, beside its config
            cfg["model"] = words[words.index("--model") + 1]
        jobs.setdefault(name, []).append(("/".join(values), cfg))
    return jobs


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    work = tmp_path_factory.mktemp("seeds")
    study = study_of(seed=0, grid_seed=0)
    study["grid"][0]["seeds"] = [0, 1]
    study["grid"].append({"datasets": ["shapes"], "attacks": ["clean"], "defenses": ["none"]})
    (work / "config.yaml").write_text(yaml.safe_dump(study))
    return study, dry_run(work)


def test_two_seeds_build_the_attack_chain_once_per_seed(two_seeds):
    _, jobs = two_seeds
    for rule in CHAIN_RULES:
        assert sorted(w for w, _ in jobs[rule]) == ["shapes/badnet/default/0",
                                                    "shapes/badnet/default/1"], rule
    assert [w for w, _ in jobs["pretrain"]] == [""]  # one clean model for both seeds
    assert sorted(w for w, _ in jobs["evaluate"]) == [
        "shapes/badnet/default/coop/default/2/0", "shapes/badnet/default/coop/default/2/1",
        "shapes/badnet/default/none/default/0/0", "shapes/badnet/default/none/default/0/1",
        "shapes/clean/default/none/default/0/0"]  # the clean model: once, at the global seed
    assert sorted(w for w, _ in jobs["features"]) == [
        "shapes/badnet/default/0", "shapes/badnet/default/1", "shapes/clean/default/0"]
    # each run reads the backdoored model of its own seed
    for rule in ("defend", "evaluate"):
        for w, c in jobs[rule]:
            seed = w.rsplit("/", 1)[1]
            model = c["model"]
            assert model == ("results/models/clean/model.safetensors" if "/clean/" in w else
                             f"results/models/backdoor/shapes/badnet/default/seed~{seed}/"
                             "model.safetensors"), (rule, w)


def test_the_seed_reaches_trigger_poison_and_backdoor_and_seed_0_is_the_old_one(two_seeds):
    study, jobs = two_seeds
    for rule in CHAIN_RULES:
        cfg = {w.rsplit("/", 1)[1]: c for w, c in jobs[rule]}
        assert (cfg["0"]["seed"], cfg["1"]["seed"]) == (0, 1), rule
        assert {**cfg["1"], "seed": 0} == cfg["0"], rule  # nothing else differs
    # seed 0 = what these jobs were handed when they read the global `seed` (0 here)
    resolved = config.resolve(study)
    (trigger_cfg,) = [c for w, c in jobs["trigger"] if w.endswith("/0")]
    assert trigger_cfg == {
        "attack": "badnet", "params": resolved["attacks"]["badnet"], "seed": resolved["seed"],
        "image_size": 32, "target_dataset": "shapes", "backdoor": resolved["backdoor"],
        "datasets": {"shapes": resolved["datasets"]["shapes"]}}
    (backdoor_cfg,) = [c for w, c in jobs["backdoor"] if w.endswith("/0")]
    assert backdoor_cfg == {"backdoor": resolved["backdoor"], "seed": resolved["seed"]}
    assert sorted(c["run_seed"] for _, c in jobs["defend"]) == [0, 1]


def test_the_global_seed_stays_with_pretraining(tmp_path):
    study = study_of(seed=5, grid_seed=1)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(study))
    jobs = dry_run(tmp_path)
    assert [c["seed"] for _, c in jobs["pretrain"]] == [5]
    for rule in CHAIN_RULES:
        assert [(w, c["seed"]) for w, c in jobs[rule]] == [("shapes/badnet/default/1", 1)], rule


@pytest.mark.parametrize("name", ["badnet", "blended", "wanet"])
def test_trigger_step_draws_from_the_seed_it_is_handed(tmp_path, name):
    params = config.load(ROOT / "config" / "config.yaml")["attacks"][name]
    cfg = {"attack": name, "params": params, "image_size": 32}
    drawn = {}
    for seed in (0, 1):
        out = tmp_path / f"{seed}.safetensors"
        trigger_verb.trigger({**cfg, "seed": seed}, str(out), "code")
        drawn[seed], _ = load_tensors(out)
    old = attacks.get(name, cfg["params"], 32).make_trigger(0)  # the global seed 0's trigger
    assert drawn[0].keys() == old.keys() and all(torch.equal(drawn[0][k], old[k]) for k in old)
    assert any(not torch.equal(drawn[0][k], drawn[1][k]) for k in old)


def test_audit_compares_a_chain_artifact_with_the_seed_of_its_path():
    cur = {"seed": 0, "backdoor": {"steps": 2}, "datasets": {},
           "model": {"arch": "clipbd-tiny-vit", "weights": None}}
    path = "results/models/backdoor/shapes/badnet/default/seed~2/model.safetensors"
    assert expect.path_seed(path) == 2
    assert expect.path_seed("results/data/shapes/fewshot/shots~2/seed~3.json") == 3
    assert expect.config_diffs("backdoor", {"seed": 2, "backdoor": {"steps": 2}}, cur, path) == []
    assert expect.config_diffs("backdoor", {"seed": 0, "backdoor": {"steps": 2}}, cur,
                               path) == ["seed"]
    assert expect.config_diffs("pretrain", {"seed": 1}, cur,
                               "results/models/clean/model.safetensors") == ["seed"]


SEEDS_JOBS = {"prepare_data": 2, "pretrain": 1, "trigger": 12, "learn_trigger": 9,
              "poison": 21, "poison_test": 21, "backdoor": 21, "fewshot": 3, "features": 22,
              "defend": 84, "evaluate": 106, "probe": 4, "gallery": 1, "aggregate": 1,
              "figure": 1, "loss_curves": 1, "paper_table": 6, "paper_figure": 3,
              "paper_captions": 1, "all": 1}


def test_seeds_config_resolves_and_plans(tmp_path):
    seeds = config.load(ROOT / "config" / "seeds.yaml")
    default = config.load(ROOT / "config" / "config.yaml")
    assert {k: v for k, v in seeds.items() if k != "grid"} == {
        k: v for k, v in default.items() if k != "grid"}
    assert [(b["attacks"], b["defenses"], b["seeds"]) for b in seeds["grid"]] == [
        (default["grid"][0]["attacks"], ["none", "cbpt", "rvpt", "vpt", "coop"], [0, 1, 2]),
        (["clean"], ["none"], [0])]
    cmd = ["timeout", "600", *SNAKEMAKE, "--directory", str(tmp_path), "--configfile",
           str(ROOT / "config" / "seeds.yaml"), "--config", "plan_only=true", "-n"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    table = (res.stdout + res.stderr).split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}
    # 7 attacks x 3 seeds: 21 backdoors (4 drawn + 3 learned triggers each seed); 7 x 3 x 4
    # tuned defenses; 7 x 3 x 5 evaluations + the clean model's; 7 x 3 + 1 feature caches
    # (none, CoOp); probes: backdoored, clean, VPT, RVPT
    assert jobs == SEEDS_JOBS
