"""A --configfile study stands on its own (issue 17): it replaces the default study instead of
being merged into it, a file that builds on another says `extends:`, and the Snakefile, the
audit and the tests read it through one function (clipbd.config.study). Also: every rule that
requests a GPU goes to the GPU partition of the slurm profile, the jobs that compute with a
model place it on the job's device (and their sidecars say where), and bf16 autocast reaches
the prompt-tuning loops while amp none leaves them in float32."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from clipbd import accel, config
from clipbd.config import ConfigError
from workflow_util import ROOT, SNAKEMAKE, micro_study

PAPER = ROOT / "config" / "paper.yaml"
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def mini() -> dict:
    """A synthetic-data study (no files needed) with an RVPT the tiny CLIP can hold."""
    cfg = micro_study(seed=0, steps=2, attack="badnet", defense="rvpt", grid_seed=0)
    cfg["defenses"]["rvpt"].update(depth=3, length=4)
    return cfg


def write(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---- the layering function ----


def test_a_configfile_replaces_the_default_study():
    paper = yaml.safe_load(PAPER.read_text())
    assert config.study([PAPER]) == paper  # nothing of config/config.yaml in it
    cfg = config.resolve(config.study([PAPER], {"plan_only": True}))
    assert "fmnist" not in cfg["datasets"] and "shapes" not in cfg["datasets"]
    d, a = cfg["defenses"], cfg["attacks"]
    assert (d["cbpt"]["lr"], d["cbpt"]["trigger_weight"], d["cbpt"]["key_gain"]) == (
        0.002, 1.0, 4.5)
    assert (d["coop"]["lr"], d["ft"]["lr"], a["wanet"]["s"], a["badclip"]["text_only_rate"]) == (
        0.002, 1e-5, 1.0, 0.0)


def test_no_configfile_is_the_default_study(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert config.study([]) == DEFAULT
    assert config.study([], {"seed": 3, "defenses": {"cbpt": {"lr": 0.1}}}) == config.merged(
        DEFAULT, {"seed": 3, "defenses": {"cbpt": {"lr": 0.1}}})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no config: config/config.yaml not found; "
                                          r".*--configfile"):
        config.study([])


def test_extends_layers_a_file_on_another_relative_to_it(tmp_path):
    base = write(tmp_path / "base" / "study.yaml", {"seed": 1, "defenses": {"cbpt": {"lr": 0.1,
                                                                               "epochs": 5}}})
    write(tmp_path / "mid.yaml", {"extends": "base/study.yaml",
                                        "defenses": {"cbpt": {"lr": 0.2}}, "grid": [1]})
    top = write(tmp_path / "sub" / "top.yaml", {"extends": "../mid.yaml", "grid": [2]})
    assert config.study([top]) == {"seed": 1, "defenses": {"cbpt": {"lr": 0.2, "epochs": 5}},
                                   "grid": [2]}  # dicts merge key by key, lists replace
    # several --configfile files merge in order; --config overrides go on top
    assert config.study([top, base], {"seed": 7}) == {
        "seed": 7, "defenses": {"cbpt": {"lr": 0.1, "epochs": 5}}, "grid": [2]}
    # config/full.yaml: the default study with another grid
    full = yaml.safe_load((ROOT / "config" / "full.yaml").read_text())
    assert config.study([ROOT / "config" / "full.yaml"]) == {**DEFAULT, "grid": full["grid"]}


def test_bad_extends_are_one_clear_error(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match=r"extends itself through .*a.yaml -> .*b.yaml -> "
                                          r".*a.yaml; break the cycle"):
        config.study([tmp_path / "a.yaml"])
    write(tmp_path / "c.yaml", {"extends": ["a.yaml"]})
    with pytest.raises(ConfigError, match=r"`extends` in .*c.yaml: expected the path of one"):
        config.study([tmp_path / "c.yaml"])
    write(tmp_path / "d.yaml", {"extends": "missing.yaml"})
    with pytest.raises(ConfigError, match=r"missing.yaml \(extended by .*d.yaml\): cannot read"):
        config.study([tmp_path / "d.yaml"])


def test_audit_reads_a_configfile_as_the_workflow_does(tmp_path, capsys):
    from clipbd import cli

    base = write(tmp_path / "cfgs" / "base.yaml",
                 mini())
    ext = write(tmp_path / "ext.yaml", {"extends": "cfgs/base.yaml", "seed": 4})
    assert config.load(ext) == config.resolve({**yaml.safe_load(base.read_text()), "seed": 4})
    root = tmp_path / "root"
    root.mkdir()
    args = ["audit", "--root", str(root), "--out-dir", str(root / "audit"), "--configfile"]
    assert cli.main([*args, str(ext)]) == 1  # read; the empty root has no table (missing)
    bad = write(tmp_path / "bad.yaml", {"extends": "nothere.yaml"})
    assert cli.main([*args, str(bad)]) == 2
    assert "clipbd config error: config file " in capsys.readouterr().err


# ---- through the real Snakefile ----


def dry_run(work: Path, *args: str) -> dict[str, list[dict]]:
    """`snakemake -n -p` in `work` (no --configfile added): rule -> the `--cfg` JSON of each
    planned job, read from the shell commands it prints."""
    cmd = ["timeout", "-k", "10", "600", *SNAKEMAKE, "--directory", str(work), "-n", "-p",
           "--cores", "1", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    jobs: dict[str, list[dict]] = {}
    printed = re.findall(r"(python -m clipbd \S+ --cfg .*)$", res.stdout + res.stderr, flags=re.M)
    for cmdline in sorted(set(printed)):
        words = shlex.split(cmdline)
        if "--cfg" in words:
            jobs.setdefault(words[3], []).append(json.loads(words[words.index("--cfg") + 1]))
    return jobs


@pytest.fixture
def repo_like(tmp_path):
    """A working directory with the repository's config/ (so config/config.yaml is there, as
    at the repository root), the embedded study's Fashion-MNIST pointed at a missing folder."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    default = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    default["datasets"]["fmnist"]["path"] = str(tmp_path / "no-fashion-mnist")
    write(tmp_path / "config" / "config.yaml", default)
    return tmp_path


def test_paper_config_resolves_its_own_values_through_the_snakefile(repo_like):
    run = "shots~16/seed~0/delta.safetensors"
    targets = [f"results/defenses/imagenet/clean/default/{d}/default/{run}"
               for d in ("cbpt", "coop", "ft")]
    targets += [f"results/poisoned/imagenet/{a}/default/seed~0/train.safetensors"
                for a in ("wanet", "badclip")]
    jobs = dry_run(repo_like, *targets, "--configfile", "config/paper.yaml",
                   "--config", "plan_only=true")
    defend = {j["defense"]: j for j in jobs["defend"]}
    assert set(defend) == {"cbpt", "coop", "ft"}
    cbpt = defend["cbpt"]["params"]
    assert (cbpt["lr"], cbpt["trigger_weight"], cbpt["key_gain"], cbpt["n_ctx"]) == (
        0.002, 1.0, 4.5, 16)
    assert defend["coop"]["params"]["lr"] == 0.002 and defend["ft"]["params"]["lr"] == 1e-5
    poison = {j["attack"]: j for j in jobs["poison"]}
    assert poison["wanet"]["params"]["s"] == 1.0
    assert poison["badclip"]["params"]["text_only_rate"] == 0.0
    assert all("fmnist" not in j["datasets"] for js in jobs.values() for j in js
               if "datasets" in j)


def test_a_study_runs_without_the_fashion_mnist_files_and_extends_layers(repo_like):
    """Without plan_only: the default study's missing Fashion-MNIST would stop a merged run."""
    write(repo_like / "study.yaml", mini())
    jobs = dry_run(repo_like, "--configfile", "study.yaml")
    assert {j["dataset"] for j in jobs["defend"]} == {"shapes"}
    assert {j["params"]["lr"] for j in jobs["defend"] if j["defense"] == "rvpt"} == {0.002}
    # an extension: the study plus its own values, --config on top
    write(repo_like / "more" / "ext.yaml", {"extends": "../study.yaml",
                                            "defenses": {"rvpt": {"lr": 0.3}}})
    jobs = dry_run(repo_like, "--configfile", "more/ext.yaml", "--config", "eval_batch_size=7")
    rvpt = [j for j in jobs["defend"] if j["defense"] == "rvpt"]
    assert rvpt and {(j["params"]["lr"], j["params"]["epochs"], j["eval_batch_size"])
                     for j in rvpt} == {(0.3, 2, 7)}
    # without the Fashion-MNIST files the default study itself is refused, naming the key
    res = subprocess.run(["timeout", "-k", "10", "300", *SNAKEMAKE, "--directory", str(repo_like),
                          "-n", "--cores", "1"], capture_output=True, text=True, cwd=repo_like)
    assert res.returncode != 0 and "`datasets.fmnist.path`" in res.stdout + res.stderr


# ---- the slurm profile: every GPU rule on the GPU partition ----


def rule_gpus() -> dict[str, int]:
    """rule -> the gpu it requests, from the Snakefile and every rules file (supervised.smk's
    indented ones too)."""
    out = {}
    rules = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
    for smk in [ROOT / "workflow" / "Snakefile", *rules]:
        text = smk.read_text()
        heads = list(re.finditer(r"^(\s*)rule (\w+):", text, flags=re.M))
        for i, m in enumerate(heads):
            body = text[m.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            gpu = re.search(r"^\s+gpu=(\d+)", body, flags=re.M)
            out[m.group(2)] = int(gpu.group(1)) if gpu else 0
    return out


def test_every_rule_requesting_a_gpu_is_on_the_gpu_partition(repo_like):
    gpus = rule_gpus()
    # the parse saw every rule of the workflow (the supervised track's included)
    res = subprocess.run([*SNAKEMAKE, "--directory", str(repo_like), "--list-rules",
                          "--configfile", "config/supervised.yaml", "--config", "plan_only=true"],
                         capture_output=True, text=True, cwd=repo_like, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    listed = set(re.findall(r"^(\w+)$", res.stdout, flags=re.M))
    assert set(gpus) == listed
    profile = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    gpu_part, cpu_part = "gpu", profile["default-resources"]["slurm_partition"]
    assert cpu_part != gpu_part
    partition = {r: profile["set-resources"].get(r, {}).get("slurm_partition", cpu_part)
                 for r in gpus}
    wants = {r for r, n in gpus.items() if n > 0}
    assert wants >= {"pretrain", "backdoor", "learn_trigger", "defend", "evaluate", "features",
                     "probe", "sup_train", "sup_defend"}
    assert {r for r in gpus if partition[r] == gpu_part} == wants
    # a grouped GPU rule shares SLURM jobs only with GPU rules of its group
    groups = {r: m.group(1) for r, body in re.findall(
        r"^\s*rule (\w+):\n(.*?)(?=^\s*rule |\Z)",
        "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk")),
        flags=re.M | re.S) if (m := re.search(r"group:\n\s+\"(\w+)\"", body))}
    for rule in wants & set(groups):
        assert {r for r, g in groups.items() if g == groups[rule]} <= wants, rule


# ---- where jobs compute, and what their sidecars say ----


@pytest.fixture
def on_cpu(monkeypatch):
    monkeypatch.setenv("CLIPBD_DEVICE", "cpu")
    monkeypatch.setattr(accel, "_PLACED", set())
    return monkeypatch


def test_device_honours_the_environment(monkeypatch):
    monkeypatch.setenv("CLIPBD_DEVICE", "cpu")
    assert accel.device() == torch.device("cpu")
    monkeypatch.setenv("CLIPBD_DEVICE", "meta")  # any torch device name is taken as given
    assert accel.device() == torch.device("meta")
    model = torch.nn.Linear(2, 2)
    monkeypatch.setattr(accel, "_PLACED", set())
    assert accel.device_of(accel.place(model)).type == "meta"
    assert accel.describe()["ran_on"] == "meta"


def _splits(tmp_path):
    from clipbd.data.store import ImageSet, save_split

    g = torch.Generator().manual_seed(0)
    classes = ["circle", "square", "triangle"]
    images = torch.randint(0, 256, (12, 32, 32, 3), generator=g, dtype=torch.uint8)
    data = ImageSet(images, torch.arange(12) % 3, classes, [f"i{i}" for i in range(12)])
    save_split(tmp_path / "train.safetensors", data)
    return data, {"shapes": {"kind": "synthetic", "target": "triangle",
                             "templates": ["a photo of a {}."]}}


def test_learn_trigger_places_its_model_and_says_where(tmp_path, on_cpu, model):
    from clipbd.verbs import learn_trigger as learn_trigger_verb
    from clipbd.verbs import trigger as trigger_verb
    from clipbd.artifacts import read_json, sidecar_path
    from clipbd.models import clip

    _, datasets = _splits(tmp_path)
    splits = {"shapes": str(tmp_path / "train.safetensors")}
    common = {"image_size": 32, "datasets": datasets, "target_dataset": "shapes", "seed": 0,
              "backdoor": {"datasets": ["shapes"]}}
    trigger_verb.trigger({**common, "attack": "badnet", "params": {"patch_size": 3,
                                                            "location": "corner"}},
                  str(tmp_path / "badnet.safetensors"), "c")
    assert accel._PLACED == set()  # no model: host code only
    side = read_json(sidecar_path(tmp_path / "badnet.safetensors"))
    assert side["accelerator"]["ran_on"] == "cpu"
    clip.save_checkpoint(tmp_path / "clean.safetensors", model, "clipbd-tiny-vit")
    params = config.resolve(config.study([ROOT / "config" / "config.yaml"], {"plan_only": True})
                            )["attacks"]["trojvqa"]
    out = tmp_path / "learned.safetensors"
    learn_trigger_verb.learn_trigger({**common, "attack": "trojvqa", "params": {**params, "steps": 2}},
                        str(tmp_path / "clean.safetensors"), splits, str(out), "c")
    assert accel._PLACED == {"cpu"}  # the clean CLIP went through accel.place
    assert read_json(sidecar_path(out))["accelerator"]["ran_on"] == "cpu"


def test_probe_places_its_model(tmp_path, on_cpu, model):
    from clipbd.artifacts import load_tensors, read_json, sidecar_path
    from clipbd.models import clip
    from clipbd.report import probe

    data, _ = _splits(tmp_path)
    clip.save_checkpoint(tmp_path / "m.safetensors", model, "clipbd-tiny-vit")
    out = tmp_path / "probe.safetensors"
    path = str(tmp_path / "train.safetensors")
    probe.probe({"defense": "none"}, str(tmp_path / "m.safetensors"), "", path, path, str(out),
                "c", n=6, n_show=2)
    assert accel._PLACED == {"cpu"}
    assert read_json(sidecar_path(out))["accelerator"]["ran_on"] == "cpu"
    tensors, _ = load_tensors(out)
    assert tensors["pr"][-1].allclose(torch.ones(3))  # the "trigger" set is the clean one here
    assert tensors["feat_clean"].device.type == "cpu" and len(tensors["labels"]) == 6


# ---- bf16 autocast in the prompt-tuning loops ----


def _record(module: torch.nn.Module, seen: list):
    def hook(_mod, _inp, out):
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
    return module.register_forward_hook(hook)


@pytest.mark.parametrize("name", ["vpt", "rvpt", "coop", "cbpt"])
def test_bf16_reaches_the_prompt_tuning_forward_and_none_stays_float32(name, model, monkeypatch):
    import copy

    import clipbd.defenses.cbpt  # noqa: F401  (registers)
    import clipbd.defenses.coop  # noqa: F401
    import clipbd.defenses.rvpt  # noqa: F401
    import clipbd.defenses.vpt  # noqa: F401
    from clipbd import defenses
    from clipbd.data.store import ImageSet
    from clipbd.defenses.base import DefenseContext
    from clipbd.models import clip

    params = config.resolve({**copy.deepcopy(DEFAULT), "plan_only": True})["defenses"][name]
    params.update({k: 2 for k in ("epochs", "inversion_steps", "key_steps") if k in params})
    g = torch.Generator().manual_seed(0)
    classes = ["circle", "square", "triangle", "star"]
    fewshot = ImageSet(torch.randint(0, 256, (8, 32, 32, 3), generator=g, dtype=torch.uint8),
                       torch.arange(8) % 4, classes, [f"i{i}" for i in range(8)])
    results = {}
    for amp in ("none", "bf16"):
        monkeypatch.setenv("CLIPBD_AMP", amp)
        m = copy.deepcopy(model)
        # the encoder a prompt defense tunes through: the image tower for VPT/RVPT, the text
        # tower for CoOp/CBPT (their images are encoded once, also under autocast)
        tower = m.visual if name in ("vpt", "rvpt") else m
        seen: list = []
        handle = _record(tower.transformer.resblocks[-1].mlp.c_fc, seen)
        torch.manual_seed(0)
        delta = defenses.get(name, params).fit(
            DefenseContext(m, clip.tokenizer("clipbd-tiny-vit"), classes, ["a photo of a {}."], 0),
            fewshot)
        handle.remove()
        results[amp] = delta
        want = (True, torch.bfloat16) if amp == "bf16" else (False, torch.float32)
        assert seen and set(seen) == {want}, (amp, set(seen))
    key = "prompts" if name in ("vpt", "rvpt") else "ctx"
    assert results["bf16"][key].dtype == results["none"][key].dtype == torch.float32
    assert not torch.equal(results["bf16"][key], results["none"][key])
