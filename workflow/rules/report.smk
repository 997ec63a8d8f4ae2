# The tidy table and what is built from it.

GALLERY = {
    "png": f"{R}/figures/gallery/{{dataset}}_triggers.png",
    "pdf": f"{R}/figures/gallery/{{dataset}}_triggers.pdf",
    "perturbations_png": f"{R}/figures/gallery/{{dataset}}_perturbations.png",
    "perturbations_pdf": f"{R}/figures/gallery/{{dataset}}_perturbations.pdf",
}
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


rule gallery:
    input:
        unpack(gallery_inputs),
        test=f"{R}/data/{{dataset}}/test.safetensors",
    output:
        **GALLERY,
    params:
        code=code_for("gallery"),
        triggered=gallery_args,
        seed=config["seed"],
    conda:
        ENV
    log:
        "logs/gallery/{dataset}.log",
    shell:
        "python -m clipbd gallery --code {params.code} --test {input.test} "
        "--triggered {params.triggered} --seed {params.seed} --png {output.png} "
        "--pdf {output.pdf} --perturbations-png {output.perturbations_png} "
        "--perturbations-pdf {output.perturbations_pdf} 2> {log}"
