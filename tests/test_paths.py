"""clipbd.paths: the one definition of where each artifact goes (rules, paper plan, audit)."""
from __future__ import annotations

from dataclasses import asdict

from clipbd import paths
from clipbd.grid import Run
from clipbd.report import plan

RUN = Run("fmnist", "badnet", "default", "rvpt", "alpha~0.5", 4, 1)


def test_fill_sets_the_given_fields_and_keeps_the_others_as_wildcards():
    assert paths.fill(paths.SPLIT, split="test") == "results/data/{dataset}/test.safetensors"
    assert paths.fill(paths.SPLIT, dataset="fmnist", split="test") == \
        "results/data/fmnist/test.safetensors"
    assert paths.fill(paths.TRIGGER, kind="learned") == (
        "results/triggers/{dataset}/{attack}/{attack_variant}/seed~{seed}/learned.safetensors")
    assert paths.fill(paths.PAPER, paper="{wildcards.paper}", item="x") == \
        "results/paper/{wildcards.paper}/x"


def test_a_run_key_is_the_run_template_and_fills_every_run_path():
    assert RUN.key == "fmnist/badnet/default/rvpt/alpha~0.5/shots~4/seed~1"
    for template, head, tail in ((paths.METRICS, "metrics", "metrics.json"),
                                 (paths.DELTA, "defenses", "delta.safetensors"),
                                 (paths.PROBE, "probes", "probe.safetensors")):
        assert paths.fill(template, **asdict(RUN)) == f"results/{head}/{RUN.key}/{tail}"
    chain = {"attack": "badnet", "attack_variant": "default", "seed": 1}
    assert paths.fill(paths.BACKDOOR_MODEL, dataset="fmnist", **chain) == \
        "results/models/backdoor/fmnist/badnet/default/seed~1/model.safetensors"


def test_a_run_row_holds_its_coordinates_then_extra_then_its_variants():
    row = RUN.row(poison_rate=0.05)
    assert row == {"dataset": "fmnist", "attack": "badnet", "defense": "rvpt", "shots": 4,
                   "seed": 1, "attack_variant": "default", "defense_variant": "alpha~0.5",
                   "poison_rate": 0.05, "alpha": 0.5}
    assert plan.frame([RUN]).loc[0, "alpha"] == 0.5


def test_every_artifact_lies_under_results():
    templates = [v for k, v in vars(paths).items() if k.isupper() and isinstance(v, str)
                 and k not in ("RUN", "CHAIN", "RESULTS")]
    templates += [p for k in ("OVERVIEW", "LOSS_CURVES", "GALLERY") for p in getattr(paths, k).values()]
    assert len(templates) > 20 and all(t.startswith(paths.RESULTS + "/") for t in templates)


def test_paper_items_name_their_files_and_what_their_jobs_read():
    assert plan.ITEMS["rvpt/table1"].outputs("p") == ["p.csv", "p.md", "p.tex"]
    assert plan.ITEMS["rvpt/fig1"].outputs("p") == ["p.png", "p.pdf"]
    reads = {name: item.reads for name, item in plan.ITEMS.items()}
    assert reads["rvpt/table9"] == "deltas"
    assert {n for n, r in reads.items() if r == "probes"} == {"rvpt/fig1", "rvpt/fig4", "rvpt/fig5"}
    assert set(reads.values()) == {"metrics", "deltas", "probes"}
