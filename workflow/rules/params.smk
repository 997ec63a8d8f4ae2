# Params and resources of each job: the resolved config a job sees (a change reruns exactly
# its jobs), its code fingerprint, and what it asks of the machine or the cluster.


# ---- params: the resolved config each job sees (a change reruns exactly its jobs) ----


def dataset_cfg(wildcards):
    return as_json(
        {
            "name": wildcards.dataset,
            "dataset": config["datasets"][wildcards.dataset],
            "image_size": config["image_size"],
            "seed": config["seed"],
        }
    )


def pretrain_cfg(wildcards):
    if config["model"]["weights"]:  # imported: nothing of pre-training matters
        return as_json({"model": config["model"], "pretrain": {}, "seed": config["seed"]})
    keys = ("model", "pretrain", "seed", "image_size")
    used = {n: config["datasets"][n] for n in config["pretrain"]["datasets"]}
    return as_json({**{k: config[k] for k in keys}, "datasets": used})


def attack_cfg(wildcards):
    params = resolved_params(config, "attack", wildcards.attack, wildcards.attack_variant)
    return as_json(
        {
            "attack": wildcards.attack,
            "params": params,
            "seed": int(wildcards.seed),
            "image_size": config["image_size"],
            "target_dataset": wildcards.dataset,
            "backdoor": config["backdoor"],
            "datasets": {
                n: config["datasets"][n] for n in set(config["backdoor"]["datasets"]) | {wildcards.dataset}
            },
        }
    )


def backdoor_cfg(wildcards):
    return as_json({"backdoor": config["backdoor"], "seed": int(wildcards.seed)})


def fewshot_cfg(wildcards):
    return as_json({"shots": int(wildcards.shots), "seed": int(wildcards.seed)})


def run_cfg(wildcards):
    params = resolved_params(config, "defense", wildcards.defense, wildcards.defense_variant)
    attack_params = resolved_params(config, "attack", wildcards.attack, wildcards.attack_variant)
    run = Run(
        wildcards.dataset,
        wildcards.attack,
        wildcards.attack_variant,
        wildcards.defense,
        wildcards.defense_variant,
        int(wildcards.shots),
        int(wildcards.seed),
    )
    row = run.row(poison_rate=attack_params.get("poison_rate"))
    oracle = (
        {"attack": {"params": attack_params, "image_size": config["image_size"], "seed": int(wildcards.seed)}}
        if oracle_trigger(wildcards)
        else {}
    )
    return as_json(
        {
            "dataset": wildcards.dataset,
            "defense": wildcards.defense,
            "params": params,
            "run_seed": int(wildcards.seed),
            "row": row,
            "datasets": {n: config["datasets"][n] for n in {wildcards.dataset, tune_dataset(wildcards)}},
            "eval_batch_size": config["eval_batch_size"],
            **oracle,
        }
    )


def defend_code(wildcards):
    files = defend_files(wildcards.defense, wildcards.attack, oracle_trigger(wildcards))
    return fingerprint("defend", *files)


def audit_cfg(wildcards):
    return as_json(config)


def code_for(stage, kind=None):
    def code(wildcards):
        name = getattr(wildcards, kind) if kind else ""
        return fingerprint(stage, *(method_files(kind, name) if kind else ()))

    code.__name__ = f"code_{stage}"
    return code


# ---- resources (values for the paper grid; slurm/config.yaml adds partition/account) ----


def memory(base, input_factor=0):
    """mem_mb: `base` on the first attempt, twice that after each attempt SLURM ended for memory
    (clipbd.retry). With `input_factor`, a job that holds its inputs in memory (splits,
    checkpoints) asks for that many times their size when it is more than `base` (ImageNet-scale
    splits, ViT-L weights); the embedded study stays at `base`."""
    return retry.scaled(base, retry.MEMORY, input_factor)


def minutes(base):
    """runtime (minutes): `base`, twice that after each attempt SLURM ended for time."""
    return retry.scaled(base, retry.TIME)


def threads_of(rule):
    """Threads of one job of `rule`: config `threads.<rule>`, else `threads.default`."""
    return config["threads"].get(rule, config["threads"]["default"])


def cpus_of(wildcards, threads):
    """SLURM --cpus-per-task = the job's threads (after --max-threads / --set-threads)."""
    return threads
