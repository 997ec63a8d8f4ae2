# Prepared datasets (train/test splits with manifests) and few-shot draws.


rule prepare_data:
    input:
        raw_inputs,
    output:
        train=fill(paths.SPLIT, split="train"),
        test=fill(paths.SPLIT, split="test"),
    log:
        "logs/prepare_data/{dataset}.log",
    conda:
        ENV
    threads: threads_of("prepare_data")  # image-decoding worker processes (1: in the job)
    resources:
        # no input_factor: images are decoded and written a batch at a time (clipbd.data.decode);
        # memory follows the workers (one Python+torch process per thread, ~0.3 GB each as SLURM
        # counts them, 2 batches of 64 images in flight each) and the entry list, not the split
        mem_mb=memory(8000),
        runtime=minutes(30),
        cpus_per_task=cpus_of,
    params:
        cfg=dataset_cfg,
        code=code_for("prepare"),
    shell:
        "python -m clipbd prepare --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --out-train {output.train} --out-test {output.test} 2> {log}"


rule fewshot:
    input:
        train=fill(paths.SPLIT, split="train"),
    output:
        paths.FEWSHOT,
    log:
        "logs/fewshot/{dataset}/shots~{shots}/seed~{seed}.log",
    group:
        "fewshot"
    conda:
        ENV
    resources:
        mem_mb=memory(2000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    params:
        cfg=fewshot_cfg,
        code=code_for("fewshot"),
    shell:
        "python -m clipbd fewshot --cfg {params.cfg:q} --code {params.code} "
        "--train {input.train} --out {output} 2> {log}"
