# Grid expansion, input functions, params builders, wildcard constraints.
import json

from clipbd.fingerprint import fingerprint, method_files
from clipbd.grid import resolved_params, decode_variant

R = "results"
ENV = "../../environment.yml"  # used with --software-deployment-method conda
RUN = "{dataset}/{attack}/{avar}/{defense}/{dvar}/shots~{shots}/seed~{seed}"


wildcard_constraints:
    dataset="[^/]+",
    attack="[^/]+",
    avar="[^/]+",
    defense="[^/]+",
    dvar="[^/]+",
    shots=r"\d+",
    seed=r"\d+",


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def final_targets(wildcards):
    galleries = [GALLERY[k].format(dataset=d) for d in attacked_datasets() for k in GALLERY]
    return {"metrics": all_metrics(wildcards), "galleries": galleries, **FIGURES}


def attacked_datasets():
    return sorted({run.dataset for run in RUNS if run.attack != "clean"})


def first_variants(dataset):
    """attack -> one poisoned test set of it on `dataset` (its first variant in the grid)."""
    out = {}
    for run in RUNS:
        if run.dataset == dataset and run.attack != "clean" and run.attack not in out:
            out[run.attack] = f"{R}/poisoned/{dataset}/{run.attack}/{run.avar}/test.safetensors"
    return out


def gallery_inputs(wildcards):
    return first_variants(wildcards.dataset)


def gallery_args(wildcards):
    return " ".join(f"{a}={p}" for a, p in first_variants(wildcards.dataset).items())


def all_metrics(wildcards):
    return [f"{R}/metrics/{run.key}/metrics.json" for run in RUNS]


def split_path(name, split):
    return f"{R}/data/{name}/{split}.safetensors"


def raw_inputs(wildcards):
    ds = config["datasets"][wildcards.dataset]
    if ds["kind"] != "fashion_mnist" or config["plan_only"]:
        return []
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


def trigger_for(wildcards):
    name = "learned" if attack_class(wildcards.attack).learned else "trigger"
    return f"{R}/triggers/{wildcards.dataset}/{wildcards.attack}/{wildcards.avar}/{name}.safetensors"


def learn_trigger_datasets(wildcards):
    return sorted(set(config["backdoor"]["datasets"]) | {wildcards.dataset})


def learn_trigger_model(wildcards):
    needs = attack_class(wildcards.attack).needs_model
    return f"{R}/models/clean/model.safetensors" if needs else ""


def learn_trigger_inputs(wildcards):
    out = {n: split_path(n, "train") for n in learn_trigger_datasets(wildcards)}
    model = learn_trigger_model(wildcards)
    return {**out, "model": model} if model else out


def learn_trigger_splits(wildcards):
    return " ".join(f"{n}={split_path(n, 'train')}" for n in learn_trigger_datasets(wildcards))


def model_for(wildcards):
    if wildcards.attack == "clean":
        return f"{R}/models/clean/model.safetensors"
    return f"{R}/models/backdoor/{wildcards.dataset}/{wildcards.attack}/{wildcards.avar}/model.safetensors"


def poisoned_test_for(wildcards):
    if wildcards.attack == "clean":
        return []
    return f"{R}/poisoned/{wildcards.dataset}/{wildcards.attack}/{wildcards.avar}/test.safetensors"


def delta_for(wildcards):
    if wildcards.defense == "none":
        return []
    return f"{R}/defenses/{RUN}/delta.safetensors".format(**wildcards)


def tune_dataset(wildcards):
    """The dataset a defense tunes on: `tune_dataset` of its variant, else the evaluated one."""
    params = resolved_params(config, "defense", wildcards.defense, wildcards.dvar)
    return params.get("tune_dataset") or wildcards.dataset


def fewshot_for(wildcards):
    tune = tune_dataset(wildcards)
    return f"{R}/data/{tune}/fewshot/shots~{wildcards.shots}/seed~{wildcards.seed}.json"


def tune_train_for(wildcards):
    return split_path(tune_dataset(wildcards), "train")


# ---- params: the resolved config each job sees (a change reruns exactly its jobs) ----


def dataset_cfg(wildcards):
    return as_json({"name": wildcards.dataset, "dataset": config["datasets"][wildcards.dataset],
                    "image_size": config["image_size"], "seed": config["seed"]})


def pretrain_cfg(wildcards):
    keys = ("model", "pretrain", "seed", "image_size")
    used = {n: config["datasets"][n] for n in config["pretrain"]["datasets"]}
    return as_json({**{k: config[k] for k in keys}, "datasets": used})


def attack_cfg(wildcards):
    params = resolved_params(config, "attack", wildcards.attack, wildcards.avar)
    return as_json({"attack": wildcards.attack, "params": params, "seed": config["seed"],
                    "image_size": config["image_size"], "target_dataset": wildcards.dataset,
                    "backdoor": config["backdoor"],
                    "datasets": {n: config["datasets"][n] for n in
                                 set(config["backdoor"]["datasets"]) | {wildcards.dataset}}})


def backdoor_cfg(wildcards):
    return as_json({"backdoor": config["backdoor"], "seed": config["seed"]})


def fewshot_cfg(wildcards):
    return as_json({"shots": int(wildcards.shots), "seed": int(wildcards.seed)})


def run_cfg(wildcards):
    params = resolved_params(config, "defense", wildcards.defense, wildcards.dvar)
    attack_params = resolved_params(config, "attack", wildcards.attack, wildcards.avar)
    row = {"dataset": wildcards.dataset, "attack": wildcards.attack,
           "defense": wildcards.defense, "shots": int(wildcards.shots),
           "seed": int(wildcards.seed), "attack_variant": wildcards.avar,
           "defense_variant": wildcards.dvar, "poison_rate": attack_params.get("poison_rate"),
           **decode_variant(wildcards.avar), **decode_variant(wildcards.dvar)}
    return as_json({"dataset": wildcards.dataset, "defense": wildcards.defense,
                    "params": params, "run_seed": int(wildcards.seed), "row": row,
                    "datasets": {n: config["datasets"][n] for n in
                                 {wildcards.dataset, tune_dataset(wildcards)}},
                    "eval_batch_size": config["eval_batch_size"]})


def code_for(stage, kind=None):
    def code(wildcards):
        name = getattr(wildcards, kind) if kind else ""
        return fingerprint(stage, *(method_files(kind, name) if kind else ()))

    code.__name__ = f"code_{stage}"
    return code
