# The clean CLIP (pre-trained here, or imported from local weights) and backdoored CLIPs.


rule pretrain:
    input:
        unpack(train_splits("pretrain")),
    output:
        f"{R}/models/clean/model.safetensors",
    params:
        cfg=pretrain_cfg,
        code=code_for("pretrain"),
        splits=split_args("pretrain"),
    threads: 2
    conda:
        ENV
    log:
        "logs/pretrain/clean.log",
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "python -m clipbd pretrain --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --split {params.splits} --out {output} 2> {log}"


rule backdoor:
    input:
        clean=f"{R}/models/clean/model.safetensors",
        poisoned=f"{R}/poisoned/{{dataset}}/{{attack}}/{{avar}}/train.safetensors",
    output:
        f"{R}/models/backdoor/{{dataset}}/{{attack}}/{{avar}}/model.safetensors",
    params:
        cfg=backdoor_cfg,
        code=code_for("backdoor"),
    threads: 2
    conda:
        ENV
    log:
        "logs/backdoor/{dataset}/{attack}/{avar}.log",
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "python -m clipbd backdoor --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --clean {input.clean} --poisoned {input.poisoned} "
        "--out {output} 2> {log}"
