# The clean CLIP (pre-trained here, or imported from local weights) and backdoored CLIPs.


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        paths.CLEAN_MODEL,
    log:
        "logs/pretrain/clean.log",
    conda:
        ENV
    threads: threads_of("pretrain")
    resources:
        gpu=1,
        mem_mb=memory(8000),
        runtime=minutes(120),
        cpus_per_task=cpus_of,
    params:
        cfg=pretrain_cfg,
        code=code_for("pretrain"),
        splits=pretrain_split_args,
    shell:
        "python -m clipbd pretrain --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --split {params.splits} --out {output} 2> {log}"


# Another backbone (`models.<name>`): local weights + sha256, imported, never pre-trained.
rule import_model:
    input:
        unpack(import_inputs),
    output:
        paths.BACKBONE_MODEL,
    log:
        "logs/import_model/{backbone}.log",
    conda:
        ENV
    resources:
        mem_mb=memory(16000),
        runtime=minutes(30),
    params:
        cfg=import_cfg,
        code=code_for("pretrain"),
    shell:
        "python -m clipbd pretrain --cfg {params.cfg:q} --code {params.code} " "--out {output} 2> {log}"


rule backdoor:
    input:
        # the corpus is an index into these clean splits: its clean rows are read from them
        unpack(train_splits("backdoor")),
        clean=backdoor_clean_model,
        poisoned=fill(paths.POISONED, split="train"),
    output:
        paths.BACKDOOR_MODEL,
    log:
        "logs/backdoor/{dataset}/{attack}/{attack_variant}/seed~{seed}.log",
    conda:
        ENV
    threads: threads_of("backdoor")
    resources:
        gpu=1,
        # no input_factor: the inputs now include the clean splits, of which each step reads
        # one batch (clipbd.data.corpus); memory follows the model and batch, not the inputs
        mem_mb=memory(8000),
        runtime=minutes(240),
        cpus_per_task=cpus_of,
    params:
        cfg=backdoor_cfg,
        code=code_for("backdoor"),
    shell:
        "python -m clipbd backdoor --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --clean {input.clean} --poisoned {input.poisoned} "
        "--out {output} 2> {log}"
