# Defenses: fit on few-shot clean data; store only the delta (prompts, head, tuned weights).


rule defend:
    input:
        model=model_for,
        fewshot=fewshot_for,
        train=tune_train_for,
        trigger=oracle_trigger_for,
    output:
        paths.DELTA,
    log:
        f"logs/defend/{RUN}.log",
    conda:
        ENV
    threads: threads_of("defend")
    resources:
        gpu=1,
        # no input_factor: the tuning split stays on disk; the job holds the few-shot draw
        # (shots x classes images, uint8) or reads CleanCLIP's pairs a batch at a time
        mem_mb=memory(8000),
        runtime=minutes(120),
        cpus_per_task=cpus_of,
    params:
        cfg=run_cfg,
        code=defend_code,
    shell:
        "python -m clipbd defend --cfg {params.cfg:q} --code {params.code} "
        "--threads {threads} --model {input.model} --fewshot {input.fewshot} "
        "--train {input.train} --trigger={input.trigger} --out {output} 2> {log}"
