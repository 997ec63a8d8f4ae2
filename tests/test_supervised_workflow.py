"""The supervised track end to end in a scratch directory (pytest -m integration)."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from clipbd.artifacts import read_json
from workflow_util import ran_study

pytestmark = pytest.mark.integration

CONFIG = {
    "seed": 0, "image_size": 32,
    "datasets": {"shapes": {"kind": "synthetic", "n_train": 96, "n_test": 40,
                            "target": "triangle", "templates": ["a {}."]}},
    "grid": [{"datasets": ["shapes"], "attacks": ["clean"], "defenses": ["none"]}],
    "supervised": {
        "only": True,
        "victim": {"n_train": 80, "epochs": 1, "batch_size": 16},
        "tune_fraction": 0.25,
        "tune": {"epochs": 1, "batch_size": 10},
        "attacks": {"badnet": {"location": "corner"}},
        "grid": [{"datasets": ["shapes"], "attacks": ["badnet", "sig"],
                  "poison_rates": [0.05, 0.1], "defenses": ["none", "ft", "lp", "fst"]},
                 {"datasets": ["shapes"], "attacks": ["badnet"], "poison_rates": [0.05],
                  "defenses": ["fst"], "defense_params": {"alpha": [0.1, 1.0]}}]}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return ran_study(tmp_path_factory.mktemp("supervised"), CONFIG, timeout=600)


def test_outputs_exist_with_sidecars(study):
    out = study / "results" / "supervised"
    for rel in ("tables/fst.csv", "tables/fst.md", "figures/fst_rate.png", "figures/fst_rate.pdf",
                "figures/fst_alpha.png", "figures/fst_alpha.pdf"):
        assert (out / rel).stat().st_size > 0
        assert read_json(str(out / rel) + ".json")["step"] == "sup_report"
    assert not (study / "results" / "models").exists()  # `only`: no CLIP job ran
    victims = sorted(out.glob("victims/**/model.safetensors"))
    assert len(victims) == 4
    assert read_json(str(victims[0]) + ".json")["n_poisoned"] in (4, 8)


def test_table_equals_the_metrics_jsons(study):
    out = study / "results" / "supervised"
    df = pd.read_csv(out / "tables" / "fst.csv")
    assert list(df.columns[:9]) == ["track", "dataset", "attack", "poison_rate", "defense",
                                    "alpha", "seed", "ca", "asr"]
    assert len(df) == 2 * 2 * 4 + 2  # + the alpha sweep (0.2 is the grid's own fst)
    assert set(df[df.defense == "fst"].alpha) == {0.1, 0.2, 1.0}
    assert df[df.defense != "fst"].alpha.isna().all()
    for row in df.itertuples():
        m = read_json(study / row.source)["metrics"]
        assert (m["attack"], m["poison_rate"], m["defense"]) == (row.attack, row.poison_rate,
                                                                 row.defense)
        assert m["ca"] == pytest.approx(row.ca) and m["asr"] == pytest.approx(row.asr)
        assert 0 <= row.ca <= 1 and 0 <= row.asr <= 1
    md = (out / "tables" / "fst.md").read_text()
    first = df[(df.attack == "badnet") & (df.poison_rate == 0.05) & (df.defense == "none")].iloc[0]
    assert f"| badnet | 0.05 | {100 * first.ca:.1f} / {100 * first.asr:.1f} |" in md


def test_no_supervised_key_leaves_the_dag_unchanged(tmp_path):
    from workflow_util import planned_jobs

    cfg = {k: v for k, v in CONFIG.items() if k != "supervised"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(tmp_path)
    assert jobs and not any(r.startswith("sup") for r in jobs)


def test_paper_supervised_config_plans_without_data(tmp_path, root):
    """config/paper_supervised.yaml: the real-data grid (CIFAR-10, GTSRB, Tiny-ImageNet)."""
    import shutil

    from workflow_util import planned_jobs

    shutil.copy(root / "config" / "paper_supervised.yaml", tmp_path / "config.yaml")
    jobs = planned_jobs(tmp_path, "--config", "plan_only=true")
    # victims: (6 + 6 attacks) x 4 rates + 4 x 3 (Tiny); defenses: 5 per victim + 6 alphas x 2
    assert jobs["sup_train"] == 12 * 4 + 4 * 3 == 60
    assert jobs["sup_defend"] == 60 * 5 + 2 * 5 == 310  # alpha 0.2 at 0.005 is the grid's own
    assert jobs["prepare_data"] == 3 and jobs["sup_report"] == 1
    assert not any(r in jobs for r in ("pretrain", "backdoor", "defend", "evaluate"))
