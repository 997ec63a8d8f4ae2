# Defenses: fit on few-shot clean data; store only the delta (prompts, head, tuned weights).


rule defend:
    input:
        model=model_for,
        fewshot=fewshot_for,
        train=tune_train_for,
    output:
        f"{R}/defenses/{RUN}/delta.safetensors",
    params:
        cfg=run_cfg,
        code=code_for("defend", "defense"),
    threads: 2
    conda:
        ENV
    log:
        f"logs/defend/{RUN}.log",
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "python -m clipbd defend --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --model {input.model} --fewshot {input.fewshot} "
        "--train {input.train} --out {output} 2> {log}"
