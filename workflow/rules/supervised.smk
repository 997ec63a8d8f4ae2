# The supervised track (FST's own protocol, config key `supervised`; clipbd.supervised):
# trigger -> ResNet-18 victim on poisoned data (+ its metrics) -> defenses (+ metrics) -> report.
# Without the `supervised` key nothing here is defined and the DAG is unchanged.
if "supervised" in config:

    rule supervised_all:  # `snakemake supervised_all`: this track only
        input:
            **sup_grid.REPORT,

    rule sup_trigger:
        input:
            train=sup_trigger_train,
        output:
            sup_grid.TRIGGER,
        log:
            "logs/supervised/trigger/{dataset}/{attack}.log",
        conda:
            ENV
        threads: threads_of("sup_trigger")
        resources:
            mem_mb=memory(4000),
            runtime=minutes(60),
            cpus_per_task=cpus_of,
        params:
            cfg=sup_trigger_cfg,
            code=sup_code("trigger"),
        shell:
            "python -m clipbd sup-trigger --cfg {params.cfg:q} --code {params.code} "
            "--threads {threads} --train={input.train} --out {output} 2> {log}"

    rule sup_train:
        input:
            train=fill(paths.SPLIT, split="train"),
            test=fill(paths.SPLIT, split="test"),
            trigger=sup_grid.TRIGGER,
        output:
            model=sup_grid.VICTIM,
            metrics=f"{SUP_RESULTS}/metrics/{{dataset}}/{{attack}}/rate~{{rate}}/none/default/seed~{{seed}}/metrics.json",
        log:
            "logs/supervised/train/{dataset}/{attack}/rate~{rate}/seed~{seed}.log",
        conda:
            ENV
        threads: threads_of("sup_train")
        resources:
            gpu=1,
            mem_mb=memory(8000),
            runtime=minutes(240),
            cpus_per_task=cpus_of,
        params:
            cfg=sup_train_cfg,
            code=sup_code("train"),
        shell:
            "python -m clipbd sup-train --cfg {params.cfg:q} --code {params.code} "
            "--threads {threads} --train {input.train} --test {input.test} "
            "--trigger {input.trigger} --out {output.model} --metrics {output.metrics} 2> {log}"

    rule sup_defend:
        input:
            victim=sup_grid.VICTIM,
            train=fill(paths.SPLIT, split="train"),
            test=fill(paths.SPLIT, split="test"),
            trigger=sup_grid.TRIGGER,
        output:
            delta=sup_grid.DELTA,
            metrics=sup_grid.METRICS,
        log:
            "logs/supervised/defend/{dataset}/{attack}/rate~{rate}/{defense}/{defense_variant}/seed~{seed}.log",
        wildcard_constraints:
            defense="(?!none/)[^/]+",
        conda:
            ENV
        threads: threads_of("sup_defend")
        resources:
            gpu=1,
            mem_mb=memory(8000),
            runtime=minutes(60),
            cpus_per_task=cpus_of,
        params:
            cfg=sup_defend_cfg,
            code=sup_code("defend"),
        shell:
            "python -m clipbd sup-defend --cfg {params.cfg:q} --code {params.code} "
            "--threads {threads} --victim {input.victim} --train {input.train} "
            "--test {input.test} --trigger {input.trigger} --out {output.delta} "
            "--metrics {output.metrics} 2> {log}"

    rule sup_report:
        input:
            sup_metrics,
        output:
            **sup_grid.REPORT,
        log:
            "logs/supervised/report.log",
        conda:
            ENV
        resources:
            mem_mb=memory(2000),
            runtime=minutes(10),
            cpus_per_task=cpus_of,
        params:
            alpha=sup_grid.main_alpha(config),
            code=sup_code("report"),
        shell:
            "python -m clipbd sup-report --code {params.code} --alpha {params.alpha} "
            "--csv {output.csv} --markdown {output.markdown} --rate-png {output.rate_png} "
            "--rate-pdf {output.rate_pdf} --alpha-png {output.alpha_png} "
            "--alpha-pdf {output.alpha_pdf} {input} 2> {log}"
