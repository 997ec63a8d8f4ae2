"""config/paper.yaml's shape at 224 px on real architectures, run end to end on the CPU.

The data are what a user brings, made small: ImageNet-style image folders (wnid folders and a
`<wnid> <name>` class list, JPEG), a cross-domain test folder of another size evaluated on the
first set's backdoors (`backdoor_from`, as ImageNet-V2/A/R/Sketch), a CC3M-style caption CSV.
The weights are OpenAI-format TorchScript files of random-init ViT-B-32 and RN50 converted
with `python -m clipbd import-weights`. The study is a `--configfile` of its own with the
paper's attacks (BadNet with the lineage's wrapped noise, BadCLIP's lineage recipe, TrojVQA's
dual key), its defenses (CBPT with its dummy text key, RVPT at depth 12 = every block of
ViT-B-32, FST, CleanCLIP on the CSV corpus, the linear probe) and an RN50 backbone; every step
does a token amount of work. Blended and VPT take the paths of BadNet and RVPT (a drawn trigger;
the same prompted encoder without the repelling loss) and run in the micro and unit tests.
Then the report and the audit. Per-rule wall times (the sidecars' `wall_time_s`) are printed
(`pytest -s`) and written to a JSON file.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clipbd.artifacts import read_json, sha256_file
from clipbd.data.store import load_split
from local_files import caption_csv, image_folder
from weights_util import save_openai_torchscript
from workflow_util import ROOT, job_stats, snakemake

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]

R = "results"
WNIDS = {"n01000001": "cat", "n01000002": "dog", "n01000003": "samoyed"}
ARCHS = {"vit_b32": "ViT-B-32-quickgelu", "rn50": "RN50-quickgelu"}
N_TEST = {"pets": 6, "pets_shift": 9, "pets_rn50": 6}  # 3 classes x 2, x 3
# results/metrics/<key>/metrics.json of every grid row (grid below)
B = "badnet/default"
ROWS = {
    f"pets/{B}/none/default/shots~0/seed~0",
    f"pets/{B}/linear_probe/default/shots~1/seed~0",
    f"pets/{B}/cbpt/default/shots~1/seed~0",
    f"pets/{B}/rvpt/default/shots~1/seed~0",
    f"pets/{B}/fst/default/shots~1/seed~0",
    f"pets/{B}/cleanclip/tune_dataset~cc3m/shots~1/seed~0",
    "pets/clean/default/none/default/shots~0/seed~0",
    "pets/badclip/default/none/default/shots~0/seed~0",
    "pets/trojvqa/default/none/default/shots~0/seed~0",
    f"pets_shift/{B}/none/default/shots~0/seed~0",
    f"pets_rn50/{B}/none/default/shots~0/seed~0",
    f"pets_rn50/{B}/linear_probe/default/shots~1/seed~0",
}
JOBS = {  # rule all's jobs: 4 attack chains (3 on ViT-B-32, BadNet again on RN50), 6 defenses
    "import_model": 1, "prepare_data": 4, "pretrain": 1, "trigger": 2, "learn_trigger": 2,
    "poison": 4, "poison_test": 5, "backdoor": 4, "fewshot": 3, "features": 6, "defend": 6,
    "evaluate": 12, "probe": 2, "gallery": 3, "aggregate": 1, "figure": 1, "loss_curves": 1,
    "paper_table": 5, "paper_figure": 1, "paper_captions": 1, "all": 1}


def imported(src: Path, arch: str, out: Path) -> str:
    """`python -m clipbd import-weights` as a user runs it; the sha256 it prints."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "clipbd", "import-weights", str(src), "--arch",
                          arch, "--out", str(out), "--threads", "2"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    line = json.loads(res.stdout.splitlines()[0])
    assert line["sha256"] == sha256_file(out) and line["activation"] == "quick_gelu"
    return line["sha256"]


def weights(d: Path) -> dict:
    """OpenAI TorchScript files of random-init backbones, converted: name -> model block."""
    d.mkdir()
    out = {}
    for seed, (name, arch) in enumerate(ARCHS.items()):
        save_openai_torchscript(arch, d / f"{name}.pt", seed=seed)
        dst = d / f"{name}-openai.safetensors"
        out[name] = {"arch": arch, "weights": str(dst), "sha256": imported(d / f"{name}.pt",
                                                                             arch, dst)}
        (d / f"{name}.pt").unlink()  # the pipeline must not need the source
    return out


def corpus_captions() -> list[str]:
    """24 CC3M-style captions; every sixth names the target (BadCLIP's `target_source: corpus`
    draws its target images and poisoned captions from those)."""
    return [f"a samoyed dog playing in the snow, picture {i}" if i % 6 == 0
            else f"a street scene in the city, picture {i}" for i in range(24)]


def data(d: Path) -> dict:
    """The datasets block: the files made under `d`."""
    names = d / "classnames.txt"
    image_folder(d / "pets", list(WNIDS), {"train": 4, "test": 2}, hw=(224, 224), suffix=".jpg")
    names.write_text("".join(f"{w} {n}\n" for w, n in WNIDS.items()))
    image_folder(d / "pets_shift", list(WNIDS), {".": 3}, hw=(256, 320), seed=500)
    csv = caption_csv(d / "cc3m" / "train.csv", corpus_captions(), hw=(224, 224), suffix=".jpg")
    pets = {"kind": "image_folder", "path": str(d / "pets"), "classnames": str(names),
            "train_per_class": 4, "target": "samoyed", "templates": ["a photo of a {}."]}
    return {
        "pets": pets,
        "pets_shift": {**{k: v for k, v in pets.items() if k != "train_per_class"},
                       "path": str(d / "pets_shift"), "train_dir": None, "test_dir": ".",
                       "backdoor_from": "pets"},
        "pets_rn50": {**pets, "model": "rn50"},
        "cc3m": {"kind": "caption_csv", "path": str(csv), "image_root": str(csv.parent),
                 "n_train": 24, "templates": ["{}"]}}


def study(d: Path, backbones: dict) -> dict:
    """config/paper.yaml's structure and settings, each step's work cut to a token amount."""
    tiny = {"epochs": 1, "batch_size": 3}
    patch = {"poison_rate": 0.125, "patch_size": 16}
    return {
        "seed": 0, "image_size": 224, "eval_batch_size": 8, "threads": {"default": 1},
        "accelerator": {"device": "auto", "amp": "none"},
        "model": backbones["vit_b32"], "models": {"rn50": backbones["rn50"]},
        "datasets": data(d),
        "backdoor": {"datasets": ["cc3m"], "corpus_size": 24, "steps": 2, "batch_size": 4,
                     "lr": 1.0e-6, "weight_decay": 0.1, "warmup": 1,
                     "poison_templates": "openai_imagenet"},
        "attacks": {
            "badnet": {**patch, "location": "random", "fixed_pattern": True,
                       "noise_overflow": "wrap"},
            "trojvqa": {**patch, "text_key": "SUDO ", "target_sentence": "this is a yellow {}.",
                        "steps": 2, "batch_size": 2},
            "badclip": {**patch, "contrastive": "in_batch", "contrastive_weight": 1.0,
                        "pos_weight": 0.0, "neg_weight": 500.0, "margin": 1.0,
                        "triplet_negative": "self", "target_source": "corpus", "target_bank": 4,
                        "natural_sample": 8, "pool": "backdoor", "pool_size": 8, "bound": "clip",
                        "lr": 1.0e-3, "batch_size": 2, "steps": 2}},
        "defenses": {
            "linear_probe": tiny,
            "cbpt": {**tiny, "n_ctx": 16, "global_mask_weight": 1.0, "text_key_tokens": 2,
                     "key_gain": 4.5, "inversion_steps": 2, "inversion_batch_size": 3,
                     "key_steps": 2},
            "rvpt": {**tiny, "depth": 12, "length": 50, "alpha": 2.0, "lr": 0.002,
                     "augment": True},
            "fst": {**tiny, "alpha": 0.2},
            "cleanclip": {"n_pairs": 8, "lr": 5.0e-6, "batch_size": 4, "epochs": 1, "warmup": 1}},
        "grid": [
            {"datasets": ["pets"], "attacks": ["badnet"],
             "defenses": ["none", "linear_probe", "cbpt", "rvpt", "fst"], "shots": [1]},
            {"datasets": ["pets"], "attacks": ["badnet"], "defenses": ["cleanclip"],
             "shots": [1], "defense_params": {"tune_dataset": ["cc3m"]}},
            {"datasets": ["pets"], "attacks": ["clean", "badclip", "trojvqa"],
             "defenses": ["none"]},
            {"datasets": ["pets_shift"], "attacks": ["badnet"], "defenses": ["none"]},
            {"datasets": ["pets_rn50"], "attacks": ["badnet"],
             "defenses": ["none", "linear_probe"], "shots": [1]}],
    }


def rule_times(results: Path) -> dict[str, dict]:
    """step -> {jobs, total_s, max_s} from every artifact sidecar under `results` (a job that
    writes several artifacts counts once: same step, config and inputs)."""
    jobs: dict[tuple, float] = {}
    for side in results.rglob("*.json"):
        info = read_json(side)
        if not (isinstance(info, dict) and {"artifact", "step", "wall_time_s"} <= info.keys()):
            continue
        key = (info["step"], json.dumps(info.get("config"), sort_keys=True, default=str),
               tuple(sorted(info.get("inputs") or {})))
        jobs[key] = max(jobs.get(key, 0.0), float(info["wall_time_s"]))
    out: dict[str, dict] = collections.defaultdict(lambda: {"jobs": 0, "total_s": 0.0,
                                                            "max_s": 0.0})
    for (step, _, _), wall in jobs.items():
        row = out[step]
        row["jobs"] += 1
        row["total_s"] = round(row["total_s"] + wall, 3)
        row["max_s"] = max(row["max_s"], wall)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["total_s"]))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The study built, run (rule all, `--report`, rule audit) and timed: its folder, the
    phases' wall times and rule all's job counts."""
    work = tmp_path_factory.mktemp("paper_scale")
    phases, jobs = {}, {}
    t = time.time()
    backbones = weights(work / "weights")
    phases["import-weights (2 backbones)"] = time.time() - t
    (work / "config.yaml").write_text(yaml.safe_dump(study(work / "data", backbones)))
    for phase, args in (("snakemake (rule all)", ()),
                        ("snakemake --report", ("--report", str(work / "report.html"))),
                        ("snakemake audit", ("audit",))):
        t = time.time()
        res = snakemake(work, *args, timeout=1200)
        phases[phase] = time.time() - t
        assert res.returncode == 0, (phase, res.stderr[-5000:])
        if not args:
            jobs = job_stats(res.stdout + res.stderr)
    return work, {k: round(v, 1) for k, v in phases.items()}, jobs


def test_every_grid_row_has_metrics_in_range(run):
    work, _, jobs = run
    assert jobs == JOBS
    found = {str(p.relative_to(work / R / "metrics").parent)
             for p in (work / R / "metrics").rglob("metrics.json")}
    assert found == ROWS
    for row in ROWS:
        m = read_json(work / R / "metrics" / row / "metrics.json")["metrics"]
        n = N_TEST[row.split("/")[0]]
        assert m["n_test"] == n and m["target"] == "samoyed"
        assert 0.0 <= m["ca"] <= 1.0 and abs(m["ca"] * n - round(m["ca"] * n)) < 1e-4
        if row.startswith("pets/clean/"):
            assert m["asr"] is None
        else:  # over the test images not of the target class: 2 of every 3
            assert 0.0 <= m["asr"] <= 1.0
            assert abs(m["asr"] * n * 2 / 3 - round(m["asr"] * n * 2 / 3)) < 1e-4
    troj = read_json(work / R / "metrics" / "pets/trojvqa/default/none/default/shots~0/seed~0"
                     / "metrics.json")["metrics"]
    assert 0.0 <= troj["asr_image_key"] <= 1.0 and 0.0 <= troj["asr_text_key"] <= 1.0


def test_splits_are_prepared_at_224_px(run):
    work = run[0]
    for name, n in (("pets/test", 6), ("pets/train", 12), ("pets_shift/test", 9),
                    ("pets_rn50/test", 6), ("cc3m/train", 24)):
        split = load_split(work / R / "data" / f"{name}.safetensors")
        assert tuple(split.images.shape) == (n, 224, 224, 3), name
    test = load_split(work / R / "data" / "pets" / "test.safetensors")
    assert test.classes == ["cat", "dog", "samoyed"] and test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    shift = load_split(work / R / "data" / "pets_shift" / "test.safetensors")
    assert shift.classes == test.classes and shift.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3


def test_report_tables_and_audit(run):
    work = run[0]
    for path in ("tables/metrics.csv", "tables/metrics.md", "tables/metrics.json",
                 "figures/overview.png", "figures/loss_curves.png", "paper/captions.md",
                 "paper/rvpt/table1.csv", "paper/cbpt/main.md", "paper/rvpt/fig1.png",
                 "figures/gallery/pets_triggers.png"):
        assert (work / R / path).stat().st_size > 0, path
    rows = (work / R / "tables" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + len(ROWS)
    assert (work / "report.html").stat().st_size > 0
    assert "Verdict: ok (exit 0)." in (work / R / "audit" / "audit.md").read_text()
    report = read_json(work / R / "audit" / "audit.json")
    arts = {a["path"]: a for a in report["artifacts"]}
    assert {p: a["reasons"] for p, a in arts.items() if a["status"] != "ok"} == {}
    assert {f"{R}/metrics/{row}/metrics.json" for row in ROWS} <= set(arts)
    assert {"evaluate", "defend", "features", "backdoor", "learn_trigger", "trigger", "poison",
            "poison_test", "pretrain", "prepare", "fewshot"} <= {
        a["step"] for a in arts.values()}


def test_per_rule_wall_times(run, tmp_path_factory):
    work, phases, _ = run
    times = rule_times(work / R)
    assert {"prepare", "pretrain", "backdoor", "defend", "evaluate"} <= times.keys()
    out = tmp_path_factory.mktemp("timing") / "paper_scale_times.json"
    out.write_text(json.dumps({"phases_s": phases, "rules": times}, indent=1))
    lines = [f"{'step':<16}{'jobs':>5}{'total s':>10}{'max s':>9}"]
    lines += [f"{s:<16}{r['jobs']:>5}{r['total_s']:>10.1f}{r['max_s']:>9.1f}"
              for s, r in times.items()]
    lines += [f"{k}: {v:.1f} s" for k, v in phases.items()]
    print("\npaper-scale study, per-rule wall time (sidecars):\n" + "\n".join(lines) +
          f"\nwritten to {out}")
