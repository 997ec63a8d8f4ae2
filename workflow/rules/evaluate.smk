# One metrics JSON per evaluated model (CA, ASR, ASR_all, PA + the run's grid coordinates).


rule evaluate:
    input:
        model=model_for,
        delta=delta_for,
        test=f"{R}/data/{{dataset}}/test.safetensors",
        poisoned=poisoned_test_for,
    output:
        f"{R}/metrics/{RUN}/metrics.json",
    params:
        cfg=run_cfg,
        code=code_for("evaluate", "defense"),
    threads: 2
    conda:
        ENV
    log:
        f"logs/evaluate/{RUN}.log",
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m clipbd evaluate --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --model {input.model} --delta={input.delta} "
        "--test {input.test} --poisoned={input.poisoned} --out {output} 2> {log}"
