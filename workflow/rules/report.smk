# The tidy table and what is built from it.


rule aggregate:
    input:
        all_metrics,
    output:
        csv=paths.TABLE,
        json=paths.TABLE_JSON,  # dvc.yaml's metrics
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
        paths.TABLE,
    output:
        png=report(paths.OVERVIEW["png"], caption="../report/overview.rst", category="overview"),
        pdf=paths.OVERVIEW["pdf"],
        markdown=paths.OVERVIEW["markdown"],
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
        png=report(paths.LOSS_CURVES["png"], caption="../report/loss_curves.rst", category="overview"),
        pdf=paths.LOSS_CURVES["pdf"],
        csv=paths.LOSS_CURVES["csv"],
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
        test=fill(paths.SPLIT, split="test"),
    output:
        png=report(
            paths.GALLERY["png"], caption="../report/triggers.rst", category="rvpt", subcategory="figures"
        ),
        pdf=paths.GALLERY["pdf"],
        perturbations_png=report(
            paths.GALLERY["perturbations_png"],
            caption="../report/perturbations.rst",
            category="rvpt",
            subcategory="figures",
        ),
        perturbations_pdf=paths.GALLERY["perturbations_pdf"],
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
PAPER_PREFIX = fill(paths.PAPER, paper="{wildcards.paper}", item="{wildcards.item}")  # in `shell:`


report: "../report/workflow.rst"


wildcard_constraints:
    paper="rvpt|cbpt|fst",
    item="[a-z0-9]+",


rule probe:
    input:
        model=model_for,
        delta=delta_for,
        test=fill(paths.SPLIT, split="test"),
        poisoned=probe_poisoned,
    output:
        paths.PROBE,
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
            f"{paths.PAPER}.csv",
            caption="../report/paper.rst",
            category="{paper}",
            subcategory="tables",
        ),
        md=f"{paths.PAPER}.md",
        tex=f"{paths.PAPER}.tex",
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
        titles=paper_titles,
        code=code_for("paper"),
    shell:
        "python -m clipbd paper --code {params.code} --item {wildcards.paper}/{wildcards.item} "
        "--table={input.table} --deltas {input.deltas} "
        f"--prefix {PAPER_PREFIX} 2> {{log}}"


rule paper_figure:
    input:
        table=paper_table_input,
        probes=paper_probes,
    output:
        png=report(
            f"{paths.PAPER}.png",
            caption="../report/paper.rst",
            category="{paper}",
            subcategory="figures",
        ),
        pdf=f"{paths.PAPER}.pdf",
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
        titles=paper_titles,
        probes=paper_probe_args,
        code=code_for("paper"),
    shell:
        "python -m clipbd paper --code {params.code} --item {wildcards.paper}/{wildcards.item} "
        "--table={input.table} --probe {params.probes} "
        f"--prefix {PAPER_PREFIX} 2> {{log}}"


rule paper_captions:
    input:
        paper_items,
    output:
        report(paths.CAPTIONS, caption="../report/captions.rst", category="overview"),
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
