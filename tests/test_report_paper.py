"""clipbd.report: paper tables (specs + one renderer), the plan of what a grid covers, sweep
figures, probe dumps and the figures drawn from them."""
from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
import yaml

from clipbd import grid
from clipbd.artifacts import load_tensors, save_tensors, write_json
from clipbd.config import resolve
from clipbd.report import aggregate, curves, paper, plan, tables
from conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def _row(attack, defense, shots, asr, ca, seed=0, defense_variant="default", pa=None, **extra):
    return {"dataset": "d", "attack": attack, "defense": defense, "shots": shots, "seed": seed,
            "asr": asr, "ca": ca, "pa": pa, "attack_variant": "default",
            "defense_variant": defense_variant, **extra}


def test_renderer_cells_missing_runs_seeds_and_formats(tmp_path):
    df = pd.DataFrame([
        _row("a1", "none", 0, 1.0, 0.80), _row("a2", "none", 0, 0.90, 0.84),
        _row("a1", "rvpt", 16, 0.02, 0.82), _row("a1", "rvpt", 16, 0.04, 0.80, seed=1),
        _row("a2", "rvpt", 16, 0.99, 0.10, defense_variant="alpha~0"),  # a variant: not a default cell
    ])
    spec = tables.TableSpec("t", "Title 50%", [("No defense", {"defense": "none"}),
                                                ("RVPT", {"defense": "rvpt"})],
                            [(("g", "A1"), {"attack": "a1"}), (("g", "A2"), {"attack": "a2"})],
                            {"defense_variant": "default"}, average=True)
    t = tables.write(spec, df, *(str(tmp_path / f"t.{e}") for e in ("csv", "md", "tex")))
    assert t.loc["No defense"].tolist() == ["100.00 (80.00)", "90.00 (84.00)", "95.00 (82.00)"]
    # two seeds: mean ± sample std (2 and 4 -> 3 ± 1.41; 82 and 80 -> 81 ± 1.41), n; a2 absent
    assert t.loc["RVPT"].tolist() == ["3.00 ± 1.41 (81.00 ± 1.41), n=2", "—", "—"]
    md = (tmp_path / "t.md").read_text().splitlines()
    assert md[0] == "**Title 50%. Mean ± sample std (ddof=1) over n seeds.**"
    assert md[2] == "| method | g A1 | g A2 | average |"
    assert md[5] == "| RVPT | 3.00 ± 1.41 (81.00 ± 1.41), n=2 | — | — |"
    tex = (tmp_path / "t.tex").read_text()
    for line in (r"\toprule", r"\midrule", r"\bottomrule",
                 r"\caption{Title 50\%. Mean $\pm$ sample std (ddof=1) over n seeds.}",
                 r" & \multicolumn{2}{c}{g} & \multicolumn{1}{c}{} \\", r"\cmidrule(lr){2-3}",
                 r"RVPT & 3.00 $\pm$ 1.41 (81.00 $\pm$ 1.41), n=2 & --- & --- \\"):
        assert line in tex
    csv = pd.read_csv(tmp_path / "t.csv", index_col=0)
    assert list(csv.columns) == ["g A1", "g A2", "average"]
    assert csv.loc["No defense", "g A2"] == "90.00 (84.00)"


def test_cells_over_one_and_three_seeds(tmp_path):
    """n = 1: the value alone, as before seeds; n = 3: mean ± sample std (ddof=1), n=3."""
    df = pd.DataFrame([
        _row("a1", "none", 0, 1.0, 0.80, pa=0.1), _row("a2", "none", 0, 0.90, 0.84, pa=0.2),
        *(_row("a1", "rvpt", 16, asr, ca, seed=s, pa=pa) for s, (asr, ca, pa) in
          enumerate([(0.10, 0.80, 0.5), (0.20, 0.82, 0.6), (0.30, 0.84, 0.7)])),
        *(_row("a2", "rvpt", 16, asr, ca, seed=s) for s, (asr, ca) in
          enumerate([(0.0, 0.5), (0.0, 0.6), (0.3, 0.7)])),
    ])
    cols = [(("", "A1"), {"attack": "a1"}), (("", "A2"), {"attack": "a2"})]
    rows = [("No defense", {"defense": "none"}), ("RVPT", {"defense": "rvpt"})]
    t = tables.write(tables.TableSpec("t", "T", rows, cols, average=True), df,
                     *(str(tmp_path / f"t.{e}") for e in ("csv", "md", "tex")))
    assert t.loc["No defense"].tolist() == ["100.00 (80.00)", "90.00 (84.00)", "95.00 (82.00)"]
    # a2's ASR 0, 0, 30: mean 10, sample std sqrt(300) = 17.32 (the population std: 14.14);
    # average: per seed over A1, A2 (ASR 5, 10, 30 -> 15 ± 13.23; CA 65, 71, 77 -> 71 ± 6)
    assert t.loc["RVPT"].tolist() == ["20.00 ± 10.00 (82.00 ± 2.00), n=3",
                                      "10.00 ± 17.32 (60.00 ± 10.00), n=3",
                                      "15.00 ± 13.23 (71.00 ± 6.00), n=3"]
    pa = tables.build(tables.TableSpec("p", "P", rows, cols[:1], metric="pa"), df)
    assert pa[("", "A1")].tolist() == ["10.00", "60.00 ± 10.00, n=3"]
    # a table of single runs keeps its title; one with n > 1 says what ± is
    single = tables.TableSpec("s", "S", rows[:1], cols)
    assert tables.title(single, tables.build(single, df)) == "S"
    assert (tmp_path / "t.md").read_text().startswith(
        "**T. Mean ± sample std (ddof=1) over n seeds.**\n")


def test_filters_match_csv_read_booleans_and_any():
    df = pd.DataFrame([_row("a", "rvpt", 16, 0.1, 0.8, without_target_class="True"),
                       _row("a", "rvpt", 16, 0.2, 0.8, tune_dataset="other"),
                       _row("a", "rvpt", 16.0, 0.3, 0.8)])
    assert tables.select(df, {"without_target_class": True}).asr.tolist() == [0.1]
    assert tables.select(df, {"tune_dataset": tables.ANY}).asr.tolist() == [0.2]
    assert tables.select(df, {"shots": (0, 16), "tune_dataset": None}).asr.tolist() == [0.1, 0.3]
    assert tables.select(df, {"no_such_column": 1}).empty


def _embedded_runs(extra_blocks=()):
    """The runs of the embedded study with every baseline (config.yaml + full.yaml)."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["grid"] = yaml.safe_load((ROOT / "config" / "full.yaml").read_text())["grid"]
    cfg["grid"] += list(extra_blocks)
    return grid.expand(resolve(cfg))


def test_plan_of_the_embedded_study():
    p = plan.plan(_embedded_runs())
    assert p.tables == ["rvpt/table1", "rvpt/table2", "rvpt/table3", "rvpt/table8", "cbpt/main",
                        "rvpt/table9"]
    # Table 9 reads the deltas of the default runs at 16 shots: 8 models (the clean one too)
    # x 8 trained defenses - 2 (TrojVQA x linear probe / FST are not runs)
    assert len(p.deltas) == 62 and all(d.endswith("/shots~16/seed~0/delta.safetensors")
                                       for d in p.deltas)
    assert p.figures == ["rvpt/fig1", "rvpt/fig4", "rvpt/fig5"]
    assert {k: r.key for k, r in p.probes.items()} == {
        "backdoored": "fmnist/badclip/default/none/default/shots~0/seed~0",
        "clean-trained": "fmnist/clean/default/none/default/shots~0/seed~0",
        "VPT": "fmnist/badclip/default/vpt/default/shots~16/seed~0",
        "RVPT": "fmnist/badclip/default/rvpt/default/shots~16/seed~0"}
    assert p.trigger == "results/poisoned/fmnist/badclip/default/seed~0/test.safetensors"
    assert set(p.skipped) == {"RVPT Table 4", "RVPT Table 5", "RVPT Table 6", "RVPT Table 10",
                              "RVPT Table 11", "rvpt/fig3", "cbpt/shots", "fst/alpha"}
    assert "defenses: [rvpt], defense_params: {alpha: [0.5, 1, 2, 4]}" in p.skipped["rvpt/fig3"]
    assert "without_target_class=True" in p.skipped["RVPT Table 4"]


def test_plan_of_the_default_study():
    """The ten-minute default grid still covers every table and figure the full one does."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    p = plan.plan(grid.expand(resolve(cfg)))
    full = plan.plan(_embedded_runs())
    assert p.tables == full.tables and p.figures == full.figures
    assert set(p.skipped) == set(full.skipped)
    assert len(p.deltas) == 14  # CBPT and RVPT on the seven backdoored models
    assert set(p.probes) == {"backdoored", "clean-trained", "RVPT"}  # no VPT run to probe


def test_grid_blocks_named_in_the_reasons_add_the_items():
    sweep = {"datasets": ["fmnist"], "attacks": ["badnet"], "defenses": ["rvpt", "fst"],
             "shots": [4, 16], "seeds": [0], "defense_params": {"alpha": [0.5, 1.0]}}
    wotc = {"datasets": ["fmnist"], "attacks": ["badnet"], "defenses": ["rvpt"], "shots": [16],
            "seeds": [0], "defense_params": {"without_target_class": [True],
                                             "tune_dataset": ["shapes"]}}
    p = plan.plan(_embedded_runs([sweep, wotc]))
    assert {"rvpt/table4", "rvpt/table5", "rvpt/table6"} <= set(p.tables)
    assert {"rvpt/fig3", "fst/alpha"} <= set(p.figures)
    # the alpha variants are no default runs: the shots panels need their own block
    assert "cbpt/shots" in p.skipped and "rvpt/fig3 panel (a) shots" in p.skipped
    assert "rvpt/fig3 panel (c) context length" in p.skipped
    shots = {"datasets": ["fmnist"], "attacks": ["badnet"], "defenses": ["rvpt", "cbpt"],
             "shots": [4, 16], "seeds": [0]}
    p = plan.plan(_embedded_runs([shots]))
    assert "cbpt/shots" in p.figures and "rvpt/fig3" in p.figures
    assert "rvpt/fig3 panel (a) shots" not in p.skipped


def _metrics_jsons(tmp_path, runs):
    """One metrics JSON per run with distinct values (as `evaluate` writes them)."""
    paths = []
    for i, r in enumerate(runs):
        row = {"dataset": r.dataset, "attack": r.attack, "defense": r.defense, "shots": r.shots,
               "seed": r.seed, "attack_variant": r.attack_variant, "defense_variant": r.defense_variant,
               "ca": round(0.5 + (i % 37) / 100, 6), "asr": None if r.attack == "clean"
               else round((i * 7 % 97) / 100, 6), "pa": None if r.attack == "clean"
               else round((i * 3 % 89) / 100, 6), "asr_all": None,
               **grid.decode_variant(r.attack_variant), **grid.decode_variant(r.defense_variant)}
        path = tmp_path / "metrics" / r.key / "metrics.json"
        write_json(path, {"metrics": row})
        paths.append(str(path))
    return paths


def test_every_number_in_the_tables_is_a_metrics_json_value(tmp_path):
    runs = _embedded_runs()
    paths = _metrics_jsons(tmp_path, runs)
    aggregate.write_csv(aggregate.table(paths), str(tmp_path / "metrics.csv"))
    df = pd.read_csv(tmp_path / "metrics.csv")
    p = plan.plan(runs)
    p.tables.remove("rvpt/table9")  # from the deltas (test_compute_table)
    written = [f for item in p.tables for f in plan.make(item, df, str(tmp_path / item), {})]
    assert sorted(f.rsplit("/", 2)[-2] + "/" + f.rsplit("/", 1)[-1] for f in written) == sorted(
        f"{t}.{e}" for t in p.tables for e in ("csv", "md", "tex"))
    from clipbd.artifacts import read_json

    js = [read_json(x)["metrics"] for x in paths]
    by = {(m["attack"], m["defense"]): m for m in js
          if m["defense_variant"] == "default" and m["shots"] in (0, 16)}
    attack_of = {v: k for k, v in paper.ATTACK.items()}
    defense_of = {v: k for k, v in paper.DEFENSE.items()}
    checked = 0
    for item in ("rvpt/table1", "cbpt/main"):
        t = pd.read_csv(tmp_path / f"{item}.csv", index_col=0)
        for label, row in t.iterrows():
            for col, text in row.items():
                key = (attack_of.get(col.strip()), defense_of[label])
                if col == "average" or key not in by:
                    assert text == "—" or col == "average", (item, label, col)
                    continue
                m = by[key]
                assert text == f"{100 * m['asr']:.2f} ({100 * m['ca']:.2f})", (item, label, col)
                checked += 1
    assert checked == 6 * 4 - 1 + 7 * 9 - 2  # TrojVQA x linear probe / FST are not runs
    # the average column: the mean over the attacks of the JSON values, "—" if one is absent
    main = pd.read_csv(tmp_path / "cbpt/main.csv", index_col=0)
    none = [by[(a, "none")] for a in paper.ATTACK]
    assert main.loc["No defense", "average"] == (
        f"{sum(100 * m['asr'] for m in none) / 7:.2f} ({sum(100 * m['ca'] for m in none) / 7:.2f})")
    assert main.loc["Linear Probe", "average"] == "—"
    # every other number of every table is one of the metrics JSON values
    values = {f"{100 * m[k]:.2f}" for m in js for k in ("asr", "ca", "pa") if m[k] is not None}
    for item in p.tables:
        t = pd.read_csv(tmp_path / f"{item}.csv", index_col=0).drop(columns="average",
                                                                     errors="ignore")
        numbers = re.findall(r"\d+\.\d\d", " ".join(map(str, t.values.flatten())))
        assert numbers and set(numbers) <= values, item


def test_averages_follow_the_cells(tmp_path):
    df = pd.DataFrame([_row("badnet", "none", 0, 0.9, 0.8), _row("blended", "none", 0, 0.5, 0.6),
                       _row("badnet", "cbpt", 16, 0.1, 0.7)])
    t = tables.build(paper.cbpt_main(df), df)
    assert t.loc["No defense"].tolist() == ["90.00 (80.00)", "50.00 (60.00)", "70.00 (70.00)"]
    assert t.loc["CBPT"].tolist() == ["10.00 (70.00)", "—", "—"]


def test_sweep_figure_draws_the_varied_panels_only(tmp_path, caplog):
    rows = [_row(a, "rvpt", 16, asr, 0.8, defense_variant=f"alpha~{al}", alpha=al)
            for a, base in (("badnet", 0.2), ("blended", 0.4))
            for al, asr in ((0.5, base), (2.0, base / 2), (4.0, base / 4))]
    df = pd.DataFrame(rows)
    caplog.set_level("INFO")
    drawn = curves.rvpt_fig3(df, str(tmp_path / "f.png"), str(tmp_path / "f.pdf"))
    assert drawn == ["(b) alpha"]
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    assert "panel (c) context length skipped" in caplog.text
    with pytest.raises(ValueError, match="does not vary `alpha`"):
        curves.fst_alpha(df, str(tmp_path / "g.png"), str(tmp_path / "g.pdf"))


def test_tsne_keeps_clusters_apart():
    from clipbd.report.tsne import tsne

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(30, 8, generator=g) + 6 * i for i in range(3)])
    labels = torch.arange(3).repeat_interleave(30)
    y = tsne(x, steps=300)
    d = torch.cdist(y, y).fill_diagonal_(float("inf"))
    neighbours = labels[d.topk(5, largest=False).indices]
    assert (neighbours == labels[:, None]).all()  # every 5-NN in the map is from its cluster
    assert torch.equal(y, tsne(x, steps=300))


@pytest.fixture(scope="module")
def probes(model, tmp_path_factory):
    """Probe dumps of the tiny model: plain, with prompts (VPT/RVPT shape), and triggered."""
    from images import random_set

    from clipbd.data.store import ImageSet, save_split
    from clipbd.models import clip
    from clipbd.report.probe import probe

    d = tmp_path_factory.mktemp("probe")
    clip.save_checkpoint(d / "model.safetensors", model, "clipbd-tiny-vit")
    test = random_set(24, ["bag", "coat", "sneaker"], "t", 0)
    save_split(d / "test.safetensors", test)
    trig = test.images.clone()
    trig[:, -4:, -4:] = 255
    # triggered test sets as poison_test writes them: splits
    save_split(d / "poisoned.safetensors", ImageSet(trig, test.labels, test.classes, test.ids))
    save_split(d / "same.safetensors", test)
    width = model.visual.class_embedding.shape[-1]
    g = torch.Generator().manual_seed(1)
    save_tensors(d / "delta.safetensors", {"prompts": torch.randn(2, 4, width, generator=g),
                                           "blocks": torch.tensor([1, 2])})
    out = {}
    for label, defense, delta, poisoned in (
            ("backdoored", "none", "", "poisoned"), ("VPT", "vpt", "delta", "poisoned"),
            ("RVPT", "rvpt", "delta", "poisoned"), ("clean-trained", "none", "", "same")):
        out[label] = str(d / f"{label}.safetensors")
        probe({"defense": defense, "run_seed": 0}, str(d / "model.safetensors"),
              str(d / f"{delta}.safetensors") if delta else "", str(d / "test.safetensors"),
              str(d / f"{poisoned}.safetensors"), out[label], "code", n=24, n_show=3)
    return out


def test_probe_dump(model, probes):
    from clipbd.models.zeroshot import Classifier

    t, meta = load_tensors(probes["backdoored"])
    assert meta["perturbations"] == ["Gaussian noise", "Gaussian blur", "colour jitter",
                                     "horizontal flip", "trigger"]
    assert t["pr"].shape == (5, 3) and t["feat_clean"].shape == (24, 128)
    assert t["attn_clean"].shape == (3, 4, 4) and t["images_trig"].shape == (3, 32, 32, 3)
    # sigma 0.001 noise barely moves the CLS; the attention over patches is a distribution part
    assert (t["pr"][0] > 0.99).all()
    assert (t["attn_clean"] >= 0).all() and (t["attn_clean"].sum((1, 2)) <= 1 + 1e-5).all()
    # the hand-run last block reproduces the encoder: features equal encode_image's
    from images import random_set
    from clipbd.data.store import to_float

    x = to_float(random_set(24, ["bag", "coat", "sneaker"], "t", 0).images)
    with torch.no_grad():
        ref = Classifier(model, torch.nn.Identity()).features(x)
    ref = torch.nn.functional.normalize(ref, dim=-1)
    assert torch.allclose(t["feat_clean"], ref, atol=1e-5)
    # a trigger that changes nothing has resistivity 1 at every layer
    same = load_tensors(probes["clean-trained"])[0]["pr"][4]
    assert torch.allclose(same, torch.ones(3), atol=1e-5)
    # prompts change the features
    vpt = load_tensors(probes["VPT"])[0]
    assert not torch.allclose(vpt["feat_clean"], t["feat_clean"], atol=1e-3)


def test_probe_refuses_other_defenses(probes):
    from clipbd.report.probe import _prompts

    with pytest.raises(ValueError, match="cannot be probed"):
        _prompts("cleanclip", {})


@pytest.mark.parametrize("item", sorted(plan.PROBE_FIGURES))
def test_probe_figures(item, probes, tmp_path):
    outs = plan.make(item, None, str(tmp_path / "fig"), probes)
    assert [o.rsplit(".", 1)[1] for o in outs] == ["png", "pdf"]
    assert (tmp_path / "fig.png").read_bytes()[:8] == PNG


def test_captions_name_every_item_and_skip_reason():
    text = plan.captions(["rvpt/table1"], ["rvpt/fig1"], {"RVPT Table 10": "why"},
                         ["results/figures/gallery/d_triggers.png"])
    assert "`rvpt/table1.{csv,md,tex}`: RVPT Table 1:" in text
    assert "`rvpt/fig1.{png,pdf}`: RVPT Fig. 1:" in text
    assert "d_triggers.png`: RVPT Fig. 9" in text
    assert "- RVPT Table 10: why" in text
    assert set(plan.ITEMS) == {"/".join(k) for k in paper.TABLES} | set(plan.CURVES) | set(
        plan.PROBE_FIGURES) | {"rvpt/table9"}
    assert all(item.caption and item.name == name for name, item in plan.ITEMS.items())


def test_compute_table(tmp_path):
    """RVPT Table 9: float elements of each delta, its sidecar's wall time, the tuning samples."""
    deltas = []
    for i, (defense, n_pairs) in enumerate((("rvpt", None), ("rvpt", None), ("cleanclip", 500))):
        path = tmp_path / f"d{i}" / "delta.safetensors"
        save_tensors(path, {"prompts": torch.zeros(3, 4, 8),
                            "blocks": torch.tensor([0, 1, 2])} if defense == "rvpt"
                     else {"w": torch.zeros(10, 10, dtype=torch.float16)})
        few = tmp_path / "fewshot" / f"{i}.json"
        write_json(few, {"indices": list(range(16 + 2 * i))})
        write_json(f"{path}.json", {"wall_time_s": 10.0 * (i + 1), "inputs": {str(few): "x"},
                                    "config": {"defense": defense,
                                               "params": {"n_pairs": n_pairs}}})
        deltas.append(str(path))
    from clipbd.report import compute

    outs = compute.write(deltas, *(str(tmp_path / f"t9.{e}") for e in ("csv", "md", "tex")))
    t = pd.read_csv(outs[0], index_col=0, dtype=str)
    assert t.loc["RVPT"].tolist() == ["15.0", "96", "17"]  # 3 x 4 x 8 floats; block ids are not
    assert t.loc["CleanCLIP"].tolist() == ["30.0", "100", "500"]
    assert list(t.index) == ["CleanCLIP", "RVPT"]
