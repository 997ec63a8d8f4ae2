"""config/paper.yaml: the full paper grid plans without data; missing paths are all listed
before any job; a small study on local files (image folder, caption CSV, local weights) runs."""
from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import pytest
import torch
import yaml

from clipbd import config, grid
from clipbd.artifacts import load_tensors
from clipbd.data.corpus import load_corpus
from clipbd.data.store import load_split
from clipbd.config import ConfigError
from clipbd.models import clip
from local_files import caption_csv, image_folder
from workflow_util import planned_jobs, snakemake

ROOT = Path(__file__).resolve().parents[1]
PAPER = (ROOT / "config" / "paper.yaml").read_text()


def paper(tmp_path, **over) -> dict:
    """paper.yaml with its /data/ paths moved under tmp_path (absent unless a test makes them)."""
    cfg = yaml.safe_load(PAPER.replace("/data/", f"{tmp_path}/data/"))
    return {**cfg, **over}


def test_paper_grid_expands_to_every_table(tmp_path):
    runs = grid.expand(config.resolve(paper(tmp_path, plan_only=True)))
    assert len(runs) == 1003
    # `none` evaluates the backdoored model of every seed of its block (58 of the 105 at
    # seeds 1, 2), the clean model once
    assert collections.Counter(r.defense for r in runs) == {
        "rvpt": 270, "cbpt": 162, "coop": 144, "fst": 171, "linear_probe": 81, "none": 105,
        "cleanclip": 26, "ft": 24, "vpt": 20}
    by = collections.Counter(r.dataset for r in runs)
    assert by["imagenet"] == 635 and by["imagenet_v2"] == by["imagenet_sketch"] == 15
    # invalid pairs are filtered in one place: a linear head drops TrojVQA's text key; RN50
    # has no tokens to prompt
    assert not [r for r in runs if grid.invalid(r.attack, r.defense)]
    assert {r.defense for r in runs if r.dataset == "imagenet_rn50"} == {
        "none", "linear_probe", "coop", "cbpt"}
    # CleanCLIP tunes on the CC3M corpus, at 3e-6 for WaNet and ISSBA (RVPT C.2)
    clean = {(r.dataset, r.attack, r.defense_variant) for r in runs if r.defense == "cleanclip"}
    assert ("imagenet", "wanet", "lr~3e-06,tune_dataset~cc3m") in clean
    assert ("imagenet", "badclip", "tune_dataset~cc3m") in clean
    assert {r.shots for r in runs if r.defense == "cbpt"} == {1, 2, 4, 8, 16}


def test_paper_uses_the_lineage_settings(tmp_path):
    """Issue 19: poisoning templates, BadNet's wrapped noise, CBPT's two extra dummy triggers."""
    cfg = config.resolve(paper(tmp_path, plan_only=True))
    assert cfg["backdoor"]["poison_templates"] == "openai_imagenet"
    assert cfg["datasets"]["imagenet"]["templates"] == ["a photo of a {}."]  # eval prompt apart
    assert cfg["attacks"]["badnet"]["noise_overflow"] == "wrap"
    runs = grid.expand(cfg)
    assert {r.defense for r in runs if r.attack_variant == "fixed_pattern~false"} == {
        "none", "rvpt", "cleanclip"}
    cbpt = cfg["defenses"]["cbpt"]
    assert cbpt["global_mask_weight"] == 1.0 and cbpt["text_key_tokens"] == 2
    # the embedded study keeps the captions it had: its evaluation templates
    embedded = config.load(ROOT / "config" / "config.yaml", {"plan_only": True})
    assert embedded["backdoor"]["poison_templates"] == "dataset"
    assert embedded["attacks"]["badnet"]["noise_overflow"] == "clamp"


def test_cross_domain_sets_share_the_imagenet_backdoor(tmp_path):
    cfg = config.resolve(paper(tmp_path, plan_only=True))
    assert grid.backbone(cfg, "imagenet_v2") is None
    assert grid.arch(cfg, "imagenet_vitl14") == "ViT-L-14-quickgelu"
    assert grid.arch(cfg, "imagenet_prompt_cls") == "ViT-B-32-quickgelu"


def test_openai_backbones_use_quickgelu(tmp_path):
    """Every backbone of the paper config is OpenAI's CLIP, trained with QuickGELU: the
    architecture must be open_clip's -quickgelu variant, or the weights load silently wrong."""
    from clipbd.models import clip

    cfg = config.resolve(paper(tmp_path, plan_only=True))
    blocks = {"model": cfg["model"], **{f"models.{n}": m for n, m in cfg["models"].items()}}
    assert {k: (b["arch"], clip.activation(b["arch"])) for k, b in blocks.items()} == {
        "model": ("ViT-B-32-quickgelu", "quick_gelu"),
        "models.vit_b16": ("ViT-B-16-quickgelu", "quick_gelu"),
        "models.vit_l14": ("ViT-L-14-quickgelu", "quick_gelu"),
        "models.rn50": ("RN50-quickgelu", "quick_gelu")}
    assert all("openai" in b["weights"] for b in blocks.values())


def test_missing_paths_are_listed_together_with_key_and_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.resolve(paper(tmp_path))
    msg = str(info.value)
    lines = [ln for ln in msg.splitlines() if ln.startswith("  ")]
    assert msg.startswith("13 input path(s) missing") and len(lines) == 13
    d = f"{tmp_path}/data"
    assert (f"  1. {d}/imagenet not found (config keys `datasets.imagenet.path`, "
            "`datasets.imagenet_prompt_cls.path`, `datasets.imagenet_prompt_hash.path`, "
            "`datasets.imagenet_vitb16.path`, `datasets.imagenet_vitl14.path`, "
            "`datasets.imagenet_rn50.path`): set it to the dataset root") in msg
    assert f"{d}/cc3m/train.csv not found (config key `datasets.cc3m.path`)" in msg
    assert (f"{d}/clip/RN50-openai.safetensors not found (config key `models.rn50.weights`): "
            "point it at a local clipbd safetensors file and put its sha256sum under "
            "`models.rn50.sha256` (convert the file you hold once: python -m clipbd "
            "import-weights --help)") in msg
    # present files drop out of the list
    (tmp_path / "data" / "clip").mkdir(parents=True)
    (tmp_path / "data" / "clip" / "RN50-openai.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError, match="^12 input path"):
        config.resolve(paper(tmp_path))


def test_backbone_and_corpus_references_are_checked(tmp_path):
    cfg = paper(tmp_path, plan_only=True)
    cfg["datasets"]["imagenet_vitb16"]["model"] = "vit_h14"
    with pytest.raises(ConfigError, match=r"`datasets.imagenet_vitb16.model`: unknown backbone "
                                          r"'vit_h14'; define it under `models`"):
        config.resolve(cfg)
    cfg = paper(tmp_path, plan_only=True)
    cfg["datasets"]["imagenet_v2"]["target"] = "tench"
    with pytest.raises(ConfigError, match="`datasets.imagenet_v2.backdoor_from`.*share"):
        config.resolve(cfg)
    cfg = paper(tmp_path, plan_only=True)
    cfg["grid"][0]["datasets"] = ["cc3m"]
    with pytest.raises(ConfigError, match=r"`grid\[0\].datasets\[0\]`: cc3m is a caption corpus"):
        config.resolve(cfg)


def test_paper_dag_plans_without_data(tmp_path):
    (tmp_path / "config.yaml").write_text(PAPER)
    jobs = planned_jobs(tmp_path, "--config", "plan_only=true")
    mine = {k: jobs[k] for k in ("prepare_data", "pretrain", "import_model", "trigger",
                                 "learn_trigger", "poison", "poison_test", "backdoor",
                                 "fewshot", "defend", "evaluate", "aggregate")}
    # the paper grid runs seeds 0-2: each attack chain (trigger, poisoning, backdoor) once per
    # seed, and the no-defense evaluation of each seed's backdoor
    assert mine == {"prepare_data": 13, "pretrain": 1, "import_model": 3, "trigger": 51,
                    "learn_trigger": 18, "poison": 69, "poison_test": 123, "backdoor": 69,
                    "fewshot": 38, "defend": 898, "evaluate": 1003, "aggregate": 1}
    res = snakemake(tmp_path, "-n", timeout=300)  # without plan_only: one error, no job
    assert res.returncode != 0
    err = res.stderr + res.stdout
    assert "clipbd config error: 13 input path(s) missing" in err and "Job stats" not in err


# ---- a small real study on local files: image folder + caption CSV + local weights ----


@pytest.fixture
def local_study(tmp_path):
    image_folder(tmp_path / "pets", ["cat", "dog", "samoyed"], {"train": 4, "test": 2})
    caption_csv(tmp_path / "cc3m" / "pairs.csv", [f"a street scene number {i}" for i in range(12)])
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    clip.save_checkpoint(weights, clip.create("clipbd-tiny-vit"), "clipbd-tiny-vit")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    cfg = {
        "image_size": 32,
        "datasets": {
            "pets": {"kind": "image_folder", "path": str(tmp_path / "pets"), "target": "samoyed",
                     "templates": ["a photo of a {}."]},
            "cc3m": {"kind": "caption_csv", "path": str(tmp_path / "cc3m" / "pairs.csv"),
                     "templates": ["{}"]}},
        "model": {"arch": "clipbd-tiny-vit", "weights": str(weights), "sha256": sha},
        "models": {"second": {"arch": "clipbd-tiny-vit", "weights": str(weights), "sha256": sha}},
        "backdoor": {"datasets": ["cc3m"], "corpus_size": 12, "steps": 2, "batch_size": 4,
                     "warmup": 0},
        "attacks": {"badnet": {"poison_rate": 0.25, "patch_size": 3, "location": "corner"}},
        "defenses": {"linear_probe": {"epochs": 1},
                     "cleanclip": {"n_pairs": 8, "epochs": 1, "batch_size": 4, "warmup": 0}},
        "grid": [{"datasets": ["pets"], "attacks": ["clean", "badnet"],
                  "defenses": ["none", "linear_probe"], "shots": [2]},
                 {"datasets": ["pets"], "attacks": ["badnet"], "defenses": ["cleanclip"],
                  "shots": [2], "defense_params": {"tune_dataset": ["cc3m"]}}],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path, weights


def test_local_files_study_imports_weights_and_runs(local_study):
    work, weights = local_study
    jobs = planned_jobs(work)
    # local weights: `pretrain` imports them and needs no dataset split; cc3m is prepared for
    # poisoning and CleanCLIP only
    assert {k: jobs.get(k) for k in ("prepare_data", "pretrain", "poison", "backdoor", "fewshot",
                                     "defend", "evaluate")} == {
        "prepare_data": 2, "pretrain": 1, "poison": 1, "backdoor": 1, "fewshot": 2,
        "defend": 3, "evaluate": 5}
    # run the part that reads the local files: import, both readers, poisoning the corpus
    targets = ["results/models/clean/model.safetensors", "results/data/pets/test.safetensors",
               "results/poisoned/pets/badnet/default/seed~0/train.safetensors",
               "results/models/clean/second/model.safetensors"]  # a `models` backbone
    res = snakemake(work, *targets, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    given, _ = load_tensors(weights)
    for clean_path in (targets[0], targets[3]):
        clean, meta = load_tensors(work / clean_path)
        assert clean.keys() == given.keys() and meta["arch"] == "clipbd-tiny-vit"
        assert all(torch.equal(clean[k], given[k]) for k in given)
    test = load_split(work / "results" / "data" / "pets" / "test.safetensors")
    assert test.classes == ["cat", "dog", "samoyed"] and test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert tuple(test.images.shape) == (6, 32, 32, 3)
    corpus = load_corpus(work / "results" / "poisoned" / "pets" / "badnet" / "default" /
                         "seed~0" / "train.safetensors", root=work)
    poisoned = corpus.extra["poisoned"].tolist()
    assert sum(poisoned) == 3
    for cap, p in zip(corpus.captions, poisoned):  # clean pairs keep their CC3M captions
        assert cap.startswith("a street scene number") != p
