# Grid expansion, input functions, params builders, wildcard constraints.
import json
from dataclasses import asdict

from clipbd import paths
from clipbd.fingerprint import defend_files, fingerprint, method_files
from clipbd.grid import Run, backbone, real_trigger, resolved_params
from clipbd.paths import RUN, fill

ENV = f"../../{config['conda_env']}"  # used with --software-deployment-method conda


wildcard_constraints:
    dataset="[^/]+",
    attack="[^/]+",
    attack_variant="[^/]+",
    defense="[^/]+",
    defense_variant="[^/]+",
    shots=r"\d+",
    seed=r"\d+",
    backbone="[^/]+",


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def final_targets(wildcards):
    """Rule `all`: the CLIP grid's results, plus the supervised track's report when the config
    has one (rules/supervised.smk; with `supervised.only`, that report alone)."""
    supervised = {}
    if "supervised" in config:
        from clipbd.supervised import grid as sup_grid

        supervised = {f"supervised_{k}": v for k, v in sup_grid.REPORT.items()}
        if config["supervised"]["only"]:
            return supervised
    galleries = [fill(path, dataset=d) for d in attacked_datasets() for path in paths.GALLERY.values()]
    curves = {f"loss_curves_{k}": v for k, v in paths.LOSS_CURVES.items()}
    return {
        "metrics": all_metrics(wildcards),
        "galleries": galleries,
        **paths.OVERVIEW,
        **curves,
        "paper": paths.CAPTIONS,
        **supervised,
    }


def attacked_datasets():
    return sorted({run.dataset for run in RUNS if run.attack != "clean"})


def first_variants(dataset):
    """attack -> one poisoned test set of it on `dataset` (its first variant and seed in the
    grid)."""
    out = {}
    for run in RUNS:
        if run.dataset == dataset and run.attack != "clean" and run.attack not in out:
            out[run.attack] = fill(paths.POISONED, **chain_of(run), dataset=dataset, split="test")
    return out


def gallery_inputs(wildcards):
    return first_variants(wildcards.dataset)


def gallery_args(wildcards):
    return " ".join(f"{a}={p}" for a, p in first_variants(wildcards.dataset).items())


def all_metrics(wildcards):
    return [fill(paths.METRICS, **asdict(run)) for run in RUNS]


def split_path(name, split):
    return fill(paths.SPLIT, dataset=name, split=split)


def raw_inputs(wildcards):
    ds = config["datasets"][wildcards.dataset]
    if config["plan_only"]:
        return []
    if ds["kind"] == "caption_csv":  # the CSV; image folders list only their class-name file
        return [ds["path"]]
    if ds["kind"] == "webdataset":  # the tar shards
        from clipbd.data.webdataset import shard_paths

        return shard_paths(ds)
    if ds["kind"] != "fashion_mnist":
        from clipbd.data.classnames import class_files

        return class_files(ds)  # not open_clip's built-in names
    from clipbd.data.fashion_mnist import raw_files

    return raw_files(ds["path"])


def train_splits(stage):
    def inputs(wildcards):
        return {n: split_path(n, "train") for n in config[stage]["datasets"]}

    inputs.__name__ = f"{stage}_train_splits"
    return inputs


def split_args(stage):
    return " ".join(f"{n}={split_path(n, 'train')}" for n in config[stage]["datasets"])


def attack_class(name):
    from clipbd import attacks

    return attacks.REGISTRY.get(name)


# The attack chain (trigger, poisoning, backdoor) is on the seed axis: run seed s reads the
# trigger, poisoned sets and backdoored model built with seed s (`paths.CHAIN`).
def chain_of(wildcards):
    """The attack-chain fields (`paths.CHAIN`) of a run or of an attack-chain job."""
    return {"attack": wildcards.attack, "attack_variant": wildcards.attack_variant, "seed": wildcards.seed}


def trigger_for(wildcards):
    kind = "learned" if attack_class(wildcards.attack).learned else "trigger"
    src = backdoor_source(wildcards.dataset)
    return fill(paths.TRIGGER, **chain_of(wildcards), dataset=src, kind=kind)


def learn_trigger_datasets(wildcards):
    return sorted(set(config["backdoor"]["datasets"]) | {wildcards.dataset})


def learn_trigger_model(wildcards):
    needs = attack_class(wildcards.attack).needs_model
    return clean_model(wildcards.dataset) if needs else ""


def learn_trigger_inputs(wildcards):
    out = {n: split_path(n, "train") for n in learn_trigger_datasets(wildcards)}
    model = learn_trigger_model(wildcards)
    return {**out, "model": model} if model else out


def learn_trigger_splits(wildcards):
    return " ".join(f"{n}={split_path(n, 'train')}" for n in learn_trigger_datasets(wildcards))


def model_for(wildcards):
    if wildcards.attack == "clean":
        return clean_model(wildcards.dataset)
    src = backdoor_source(wildcards.dataset)
    return fill(paths.BACKDOOR_MODEL, **chain_of(wildcards), dataset=src)


def poisoned_test_for(wildcards):
    if wildcards.attack == "clean":
        return []
    return fill(paths.POISONED, **chain_of(wildcards), dataset=wildcards.dataset, split="test")


def delta_for(wildcards):
    if wildcards.defense == "none":
        return []
    return fill(paths.DELTA, **wildcards)


def tune_dataset(wildcards):
    """The dataset a defense tunes on: `tune_dataset` of its variant, else the evaluated one."""
    params = resolved_params(config, "defense", wildcards.defense, wildcards.defense_variant)
    return params.get("tune_dataset") or wildcards.dataset


def fewshot_for(wildcards):
    tune = tune_dataset(wildcards)
    return fill(paths.FEWSHOT, dataset=tune, shots=wildcards.shots, seed=wildcards.seed)


def oracle_trigger(wildcards):
    """Whether the run's defense applies the attack's real trigger (CBPT's ablation)."""
    params = resolved_params(config, "defense", wildcards.defense, wildcards.defense_variant)
    return real_trigger(wildcards.attack, params)


def oracle_trigger_for(wildcards):
    return trigger_for(wildcards) if oracle_trigger(wildcards) else []


def tune_train_for(wildcards):
    return split_path(tune_dataset(wildcards), "train")


# ---- backbones: the clean CLIP of each dataset; local weights instead of pre-training ----


def backdoor_source(dataset):
    """The dataset whose backdoored models and triggers `dataset` evaluates (`backdoor_from`)."""
    return config["datasets"][dataset].get("backdoor_from") or dataset


def clean_model(dataset):
    """The clean CLIP of `dataset`'s backbone: the top-level `model`, or one of `models`."""
    name = backbone(config, dataset)
    return fill(paths.BACKBONE_MODEL, backbone=name) if name else paths.CLEAN_MODEL


def backdoor_clean_model(wildcards):
    return clean_model(wildcards.dataset)


def local_weights(path):
    """A weight file as a job input; left out when planning without data (plan_only)."""
    return {} if config["plan_only"] else {"weights": path}


def pretrain_inputs(wildcards):
    """Local weights (imported, no pre-training), else the pre-training datasets' splits."""
    if config["model"]["weights"]:
        return local_weights(config["model"]["weights"])
    return train_splits("pretrain")(wildcards)


def pretrain_split_args(wildcards):
    return "" if config["model"]["weights"] else split_args("pretrain")


def import_inputs(wildcards):
    return local_weights(config["models"][wildcards.backbone]["weights"])


def import_cfg(wildcards):
    return as_json({"model": config["models"][wildcards.backbone], "pretrain": {}, "seed": config["seed"]})


# ---- cached image features (clipbd.features) ----


def features_for(wildcards):
    """The shared feature cache, for defenses that leave the image encoder alone."""
    from clipbd import defenses

    if not config["feature_cache"] or not defenses.REGISTRY.get(wildcards.defense).frozen_image:
        return []
    seed = config["seed"] if wildcards.attack == "clean" else wildcards.seed  # one clean model
    return fill(paths.FEATURES, **{**chain_of(wildcards), "seed": seed}, dataset=wildcards.dataset)


def features_cfg(wildcards):
    return as_json({"eval_batch_size": config["eval_batch_size"]})


# ---- the papers' tables and figures (report.smk; PAPER = clipbd.report.plan.plan(RUNS)) ----


def probe_poisoned(wildcards):
    """The triggered test set a probe perturbs with: the run's own, or for the clean model
    the probed attack's."""
    return poisoned_test_for(wildcards) or PAPER.trigger


def paper_item(wildcards):
    """The paper table or figure a job builds (clipbd.report.plan.ITEMS)."""
    return clipbd_plan.ITEMS[f"{wildcards.paper}/{wildcards.item}"]


def paper_caption(wildcards):
    return paper_item(wildcards).caption


def probe_map(wildcards):
    """label -> probe dump, for the figures drawn from probes (RVPT Figs. 1, 4, 5)."""
    if paper_item(wildcards).reads != "probes":
        return {}
    return {label: fill(paths.PROBE, **asdict(run)) for label, run in PAPER.probes.items()}


def paper_probes(wildcards):
    return sorted(probe_map(wildcards).values())


def paper_probe_args(wildcards):
    return " ".join(f"{label}={path}" for label, path in probe_map(wildcards).items())


def paper_table_input(wildcards):
    """metrics.csv, for every item but those drawn from probes or deltas only (an edit that
    changes metrics alone does not redraw them)."""
    return paths.TABLE if paper_item(wildcards).reads == "metrics" else []


def paper_deltas(wildcards):
    """The deltas (and their sidecars) an item reads its compute figures from (RVPT Table 9)."""
    return PAPER.deltas if paper_item(wildcards).reads == "deltas" else []


def paper_titles(wildcards):
    """The methods' titles in table order, printed by the paper items: their code fingerprint
    leaves a method's DISPLAY facts out (clipbd.fingerprint), so an edit of one reruns these."""
    from clipbd.report import paper

    return json.dumps([list(paper.ATTACK.items()), list(paper.DEFENSE.items())])


def paper_prefix(name):
    """results/paper/<paper>/<item> (no extension) of a plan item "<paper>/<item>"."""
    paper, item = name.split("/")
    return fill(paths.PAPER, paper=paper, item=item)


def paper_items(wildcards):
    items = [clipbd_plan.ITEMS[name] for name in PAPER.tables + PAPER.figures]
    return [out for item in items for out in item.outputs(paper_prefix(item.name))]


def paper_plan(wildcards):
    galleries = [
        fill(paths.GALLERY[k], dataset=d) for d in attacked_datasets() for k in ("png", "perturbations_png")
    ]
    return as_json(
        {"tables": PAPER.tables, "figures": PAPER.figures, "skipped": PAPER.skipped, "galleries": galleries}
    )
