# One metrics JSON per evaluated model (CA, ASR, ASR_all, PA + the run's grid coordinates).


rule evaluate:
    input:
        model=model_for,
        delta=delta_for,
        test=fill(paths.SPLIT, split="test"),
        poisoned=poisoned_test_for,
        features=features_for,
    output:
        paths.METRICS,
    log:
        f"logs/evaluate/{RUN}.log",
    group:
        "evaluate"
    conda:
        ENV
    threads: threads_of("evaluate")
    resources:
        gpu=1,
        # no input_factor: the test images stay on disk and are read an eval batch at a time
        # (clipbd.data.rows); `base` covers the checkpoint (ViT-L: weights + module ~3.4 GB)
        mem_mb=memory(8000),
        runtime=minutes(30),
        cpus_per_task=cpus_of,
    params:
        cfg=run_cfg,
        code=code_for("evaluate", "defense"),
    shell:
        "python -m clipbd evaluate --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --model {input.model} --delta={input.delta} "
        "--test {input.test} --poisoned={input.poisoned} --features={input.features} "
        "--out {output} 2> {log}"


# The image features of a model on its clean and triggered test set, encoded once and read by
# every defense that leaves the image encoder alone (none, CoOp, CBPT, linear probe).
rule features:
    input:
        model=model_for,
        test=fill(paths.SPLIT, split="test"),
        poisoned=poisoned_test_for,
    output:
        paths.FEATURES,
    log:
        "logs/features/{dataset}/{attack}/{attack_variant}/seed~{seed}.log",
    conda:
        ENV
    threads: threads_of("features")
    resources:
        gpu=1,
        # no input_factor: the test images stay on disk and are read an eval batch at a time
        # (clipbd.data.rows); `base` covers the checkpoint (ViT-L: weights + module ~3.4 GB)
        mem_mb=memory(8000),
        runtime=minutes(30),
        cpus_per_task=cpus_of,
    params:
        cfg=features_cfg,
        code=code_for("features"),
    shell:
        "python -m clipbd features --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --model {input.model} --test {input.test} "
        "--poisoned={input.poisoned} --out {output} 2> {log}"
