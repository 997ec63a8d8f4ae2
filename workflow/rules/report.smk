# The tidy table and what is built from it.

FIGURES = {
    "png": f"{R}/figures/overview.png",
    "pdf": f"{R}/figures/overview.pdf",
    "markdown": f"{R}/tables/metrics.md",
}


rule aggregate:
    input:
        all_metrics,
    output:
        f"{R}/tables/metrics.csv",
    params:
        code=code_for("aggregate"),
    conda:
        ENV
    log:
        "logs/aggregate.log",
    shell:
        "python -m clipbd aggregate --code {params.code} --out {output} {input} 2> {log}"


rule figure:
    input:
        f"{R}/tables/metrics.csv",
    output:
        **FIGURES,
    params:
        code=code_for("figure"),
    conda:
        ENV
    log:
        "logs/figure.log",
    shell:
        "python -m clipbd figure --code {params.code} --table {input} --png {output.png} "
        "--pdf {output.pdf} --markdown {output.markdown} 2> {log}"
