# The tidy table and what is built from it.

GALLERY = {
    "png": f"{RESULTS}/figures/gallery/{{dataset}}_triggers.png",
    "pdf": f"{RESULTS}/figures/gallery/{{dataset}}_triggers.pdf",
    "perturbations_png": f"{RESULTS}/figures/gallery/{{dataset}}_perturbations.png",
    "perturbations_pdf": f"{RESULTS}/figures/gallery/{{dataset}}_perturbations.pdf",
}
LOSS_CURVES = {
    "png": f"{RESULTS}/figures/loss_curves.png",
    "pdf": f"{RESULTS}/figures/loss_curves.pdf",
    "csv": f"{RESULTS}/tables/loss_curves.csv",
}
FIGURES = {
    "png": f"{RESULTS}/figures/overview.png",
    "pdf": f"{RESULTS}/figures/overview.pdf",
    "markdown": f"{RESULTS}/tables/metrics.md",
}


rule aggregate:
    input:
        all_metrics,
    output:
        csv=f"{RESULTS}/tables/metrics.csv",
        json=f"{RESULTS}/tables/metrics.json",  # dvc.yaml's metrics
    log:
        "logs/aggregate.log",
    group:
        "report"
    conda:
        ENV
    resources:
        mem_mb=memory(2000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    params:
        code=code_for("aggregate"),
    shell:
        "python -m clipbd aggregate --code {params.code} --out {output.csv} --json {output.json} "
        "{input} 2> {log}"


rule figure:
    input:
        f"{RESULTS}/tables/metrics.csv",
    output:
        png=report(FIGURES["png"], caption="../report/overview.rst", category="overview"),
        pdf=FIGURES["pdf"],
        markdown=FIGURES["markdown"],
    log:
        "logs/figure.log",
    group:
        "report"
    conda:
        ENV
    resources:
        mem_mb=memory(2000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    params:
        code=code_for("figure"),
    shell:
        "python -m clipbd figure --code {params.code} --table {input} --png {output.png} "
        "--pdf {output.pdf} --markdown {output.markdown} 2> {log}"


rule loss_curves:
    input:
        all_metrics,  # the curves: in the sidecars of the training jobs behind these
    output:
        png=report(LOSS_CURVES["png"], caption="../report/loss_curves.rst", category="overview"),
        pdf=LOSS_CURVES["pdf"],
        csv=LOSS_CURVES["csv"],
    log:
        "logs/loss_curves.log",
    group:
        "report"
    conda:
        ENV
    resources:
        mem_mb=memory(2000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    params:
        code=code_for("loss_curves"),
    shell:
        "python -m clipbd loss-curves --code {params.code} --png {output.png} --pdf {output.pdf} "
        "--csv {output.csv} {input} 2> {log}"


rule gallery:
    input:
        unpack(gallery_inputs),
        test=f"{RESULTS}/data/{{dataset}}/test.safetensors",
    output:
        png=report(GALLERY["png"], caption="../report/triggers.rst", category="rvpt", subcategory="figures"),
        pdf=GALLERY["pdf"],
        perturbations_png=report(
            GALLERY["perturbations_png"],
            caption="../report/perturbations.rst",
            category="rvpt",
            subcategory="figures",
        ),
        perturbations_pdf=GALLERY["perturbations_pdf"],
    log:
        "logs/gallery/{dataset}.log",
    group:
        "report"
    conda:
        ENV
    resources:
        mem_mb=memory(2000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    params:
        code=code_for("gallery"),
        triggered=gallery_args,
        seed=config["seed"],
    shell:
        "python -m clipbd gallery --code {params.code} --test {input.test} "
        "--triggered {params.triggered} --seed {params.seed} --png {output.png} "
        "--pdf {output.pdf} --perturbations-png {output.perturbations_png} "
        "--perturbations-pdf {output.perturbations_pdf} 2> {log}"


# ---- the papers' tables and figures (clipbd.report.plan; workflow/report/ holds the captions) ----
# Which items the grid covers is decided here, at parse time; the rest are listed with the
# reason (and the grid block that adds them) in results/paper/captions.md.
from clipbd.report import plan as clipbd_plan

PAPER = clipbd_plan.plan(RUNS)


report: "../report/workflow.rst"


wildcard_constraints:
    paper="rvpt|cbpt|fst",
    item="[a-z0-9]+",


rule probe:
    input:
        model=model_for,
        delta=delta_for,
        test=f"{RESULTS}/data/{{dataset}}/test.safetensors",
        poisoned=probe_poisoned,
    output:
        f"{RESULTS}/probes/{RUN}/probe.safetensors",
    log:
        f"logs/probe/{RUN}.log",
    conda:
        ENV
    resources:
        gpu=1,  # encodes the probed images on the job's device (a GPU where there is one)
        mem_mb=memory(4000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    params:
        cfg=run_cfg,
        code=code_for("probe"),
    shell:
        "python -m clipbd probe --cfg {params.cfg:q} --code {params.code} --model {input.model} "
        "--delta={input.delta} --test {input.test} --poisoned {input.poisoned} --out {output} "
        "2> {log}"


rule paper_table:
    input:
        table=paper_table_input,
        deltas=paper_deltas,
    output:
        csv=report(
            f"{RESULTS}/paper/{{paper}}/{{item}}.csv",
            caption="../report/paper.rst",
            category="{paper}",
            subcategory="tables",
        ),
        md=f"{RESULTS}/paper/{{paper}}/{{item}}.md",
        tex=f"{RESULTS}/paper/{{paper}}/{{item}}.tex",
    log:
        "logs/paper/{paper}_{item}.log",
    group:
        "report"
    conda:
        ENV
    resources:
        mem_mb=memory(2000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    params:
        caption=paper_caption,
        code=code_for("paper"),
    shell:
        "python -m clipbd paper --code {params.code} --item {wildcards.paper}/{wildcards.item} "
        "--table={input.table} --deltas {input.deltas} "
        f"--prefix {RESULTS}/paper/{{wildcards.paper}}/{{wildcards.item}} 2> {{log}}"


rule paper_figure:
    input:
        table=paper_table_input,
        probes=paper_probes,
    output:
        png=report(
            f"{RESULTS}/paper/{{paper}}/{{item}}.png",
            caption="../report/paper.rst",
            category="{paper}",
            subcategory="figures",
        ),
        pdf=f"{RESULTS}/paper/{{paper}}/{{item}}.pdf",
    log:
        "logs/paper/{paper}_{item}.log",
    group:
        "report"
    conda:
        ENV
    resources:
        mem_mb=memory(2000),
        runtime=minutes(10),
        cpus_per_task=cpus_of,
    params:
        caption=paper_caption,
        probes=paper_probe_args,
        code=code_for("paper"),
    shell:
        "python -m clipbd paper --code {params.code} --item {wildcards.paper}/{wildcards.item} "
        "--table={input.table} --probe {params.probes} "
        f"--prefix {RESULTS}/paper/{{wildcards.paper}}/{{wildcards.item}} 2> {{log}}"


rule paper_captions:
    input:
        paper_items,
    output:
        report(f"{RESULTS}/paper/captions.md", caption="../report/captions.rst", category="overview"),
    log:
        "logs/paper/captions.log",
    group:
        "report"
    conda:
        ENV
    resources:
        mem_mb=memory(1000),
        runtime=minutes(5),
        cpus_per_task=cpus_of,
    params:
        plan=paper_plan,
    shell:
        "python -m clipbd paper-captions --plan {params.plan:q} --out {output} 2> {log}"
