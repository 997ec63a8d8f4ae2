# Triggers (stored, versioned), poisoned fine-tuning corpora, triggered test sets.
# Drawn triggers come from `trigger`, learned ones (SSBA, TrojVQA, BadCLIP) from `learn_trigger`;
# `trigger_for` picks the right file for the attack.


rule trigger:
    output:
        fill(paths.TRIGGER, kind="trigger"),
    log:
        "logs/trigger/{dataset}/{attack}/{attack_variant}/seed~{seed}.log",
    group:
        "trigger"
    conda:
        ENV
    resources:
        mem_mb=memory(2000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    params:
        cfg=attack_cfg,
        code=code_for("trigger", "attack"),
    shell:
        "python -m clipbd trigger --cfg {params.cfg:q} --code {params.code} " "--out {output} 2> {log}"


rule learn_trigger:
    input:
        unpack(learn_trigger_inputs),
    output:
        fill(paths.TRIGGER, kind="learned"),
    log:
        "logs/learn_trigger/{dataset}/{attack}/{attack_variant}/seed~{seed}.log",
    conda:
        ENV
    threads: threads_of("learn_trigger")
    resources:
        gpu=1,
        mem_mb=memory(8000),
        runtime=minutes(120),
        cpus_per_task=cpus_of,
    params:
        cfg=attack_cfg,
        code=code_for("learn_trigger", "attack"),
        splits=learn_trigger_splits,
        model=learn_trigger_model,
    shell:
        "python -m clipbd learn-trigger --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --model={params.model} --split {params.splits} "
        "--out {output} 2> {log}"


rule poison:
    input:
        unpack(train_splits("backdoor")),
        trigger=trigger_for,
    output:
        fill(paths.POISONED, split="train"),
    log:
        "logs/poison/{dataset}/{attack}/{attack_variant}/seed~{seed}.log",
    conda:
        ENV
    resources:
        # The splits stay on disk (read a batch at a time) and the corpus is written as an index
        # into them: the job holds only the triggered rows (poisoned + image-only decoys:
        # poison_rate x corpus_size images, CC3M's 1,500 of 500K = 225 MB) and the captions.
        mem_mb=memory(8000),
        runtime=minutes(30),
        cpus_per_task=cpus_of,
    params:
        cfg=attack_cfg,
        code=code_for("poison", "attack"),
        splits=split_args("backdoor"),
    shell:
        "python -m clipbd poison --cfg {params.cfg:q} --code {params.code} "
        "--trigger {input.trigger} --split {params.splits} --out {output} 2> {log}"


rule poison_test:
    input:
        trigger=trigger_for,
        test=fill(paths.SPLIT, split="test"),
    output:
        fill(paths.POISONED, split="test"),
    log:
        "logs/poison_test/{dataset}/{attack}/{attack_variant}/seed~{seed}.log",
    conda:
        ENV
    resources:
        # no input_factor: the test split is read, triggered and written 1000 images at a time
        mem_mb=memory(4000),
        runtime=minutes(30),
        cpus_per_task=cpus_of,
    params:
        cfg=attack_cfg,
        code=code_for("poison_test", "attack"),
    shell:
        "python -m clipbd poison-test --cfg {params.cfg:q} --code {params.code} "
        "--trigger {input.trigger} --test {input.test} --out {output} 2> {log}"
