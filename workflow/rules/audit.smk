# Audit: `snakemake audit` walks the provenance chain of every final table (no output: it runs
# whenever asked, and never rebuilds what it audits). Reports in results/audit/; the job fails
# when an artifact is modified, missing or stale (exit codes: python -m clipbd audit --help).


rule audit:
    log:
        "logs/audit.log",
    localrule: True
    conda:
        ENV
    params:
        cfg=audit_cfg,
        code=code_for("aggregate"),
    shell:
        "python -m clipbd audit --cfg {params.cfg:q} --code {params.code} --root . "
        f"--out-dir {paths.AUDIT} 2> {{log}}"
