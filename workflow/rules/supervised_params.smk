# Params of the supervised track's jobs (rules in supervised.smk); defined only when the
# config has a `supervised` block.

if "supervised" in config:
    from clipbd.supervised import grid as sup_grid

    SUP = config["supervised"]
    SUP_RUNS = sup_grid.expand(config)
    SUP_RESULTS = sup_grid.RESULTS

    def sup_metrics(wildcards):
        return [run.path(sup_grid.METRICS) for run in SUP_RUNS]

    def sup_trigger_cfg(wildcards):
        return as_json(sup_grid.trigger_cfg(config, wildcards.dataset, wildcards.attack))

    def sup_trigger_train(wildcards):
        learned = clipbd_attack_learned(wildcards.attack)
        return split_path(wildcards.dataset, "train") if learned else []

    def clipbd_attack_learned(name):
        from clipbd.supervised import attacks as sup_attacks

        return sup_attacks.attack_class(name).learned

    def sup_train_cfg(wildcards):
        return as_json(
            sup_grid.train_cfg(config, wildcards.dataset, wildcards.attack, wildcards.rate, wildcards.seed)
        )

    def sup_defend_cfg(wildcards):
        return as_json(
            sup_grid.defend_cfg(
                config,
                wildcards.dataset,
                wildcards.attack,
                wildcards.rate,
                wildcards.defense,
                wildcards.defense_variant,
                wildcards.seed,
            )
        )

    def sup_code(stage):
        def code(wildcards):
            return sup_grid.code(stage, getattr(wildcards, "attack", ""), getattr(wildcards, "defense", ""))

        code.__name__ = f"sup_code_{stage}"
        return code
