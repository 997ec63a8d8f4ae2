# Prepared datasets (train/test splits with manifests) and few-shot draws.


rule prepare_data:
    input:
        raw_inputs,
    output:
        train=f"{R}/data/{{dataset}}/train.safetensors",
        test=f"{R}/data/{{dataset}}/test.safetensors",
    params:
        cfg=dataset_cfg,
        code=code_for("prepare"),
    threads: threads_of("prepare_data")  # image-decoding worker processes (1: in the job)
    conda:
        ENV
    log:
        "logs/prepare_data/{dataset}.log",
    resources:
        # no input_factor: images are decoded and written a batch at a time (clipbd.data.decode);
        # memory follows the workers (one Python+torch process per thread, ~0.3 GB each as SLURM
        # counts them, 2 batches of 64 images in flight each) and the entry list, not the split
        mem_mb=memory(8000),
        runtime=minutes(30),
        cpus_per_task=cpus_of,
    shell:
        "python -m clipbd prepare --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --out-train {output.train} --out-test {output.test} 2> {log}"


rule fewshot:
    input:
        train=f"{R}/data/{{dataset}}/train.safetensors",
    output:
        f"{R}/data/{{dataset}}/fewshot/shots~{{shots}}/seed~{{seed}}.json",
    params:
        cfg=fewshot_cfg,
        code=code_for("fewshot"),
    conda:
        ENV
    log:
        "logs/fewshot/{dataset}/shots~{shots}/seed~{seed}.log",
    group:
        "fewshot"
    resources:
        mem_mb=memory(2000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    shell:
        "python -m clipbd fewshot --cfg {params.cfg:q} --code {params.code} "
        "--train {input.train} --out {output} 2> {log}"
