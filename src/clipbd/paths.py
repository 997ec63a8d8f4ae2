"""Where the workflow writes each artifact: one template per kind of file, read by the rules
(workflow/rules/*.smk), the paper planner (clipbd.report.plan, .compute) and the audit.

A template's fields are the wildcards of the rule that writes it. `fill(template, **values)`
sets the fields given and keeps the others as `{field}`: with every field set it is a file's
path, with some left it is the pattern a rule's input or output names.

    fill(SPLIT, split="test")                  # results/data/{dataset}/test.safetensors
    fill(SPLIT, dataset="fmnist", split="test")  # results/data/fmnist/test.safetensors
"""
from __future__ import annotations

RESULTS = "results"
# a grid row (clipbd.grid.Run.key) and an attack chain (trigger, poisoned sets, backdoored
# model; on the seed axis: run seed s reads the chain built with seed s)
RUN = "{dataset}/{attack}/{attack_variant}/{defense}/{defense_variant}/shots~{shots}/seed~{seed}"
CHAIN = "{attack}/{attack_variant}/seed~{seed}"

SPLIT = RESULTS + "/data/{dataset}/{split}.safetensors"  # split: train | test
FEWSHOT = RESULTS + "/data/{dataset}/fewshot/shots~{shots}/seed~{seed}.json"
TRIGGER = RESULTS + "/triggers/{dataset}/" + CHAIN + "/{kind}.safetensors"  # trigger | learned
POISONED = RESULTS + "/poisoned/{dataset}/" + CHAIN + "/{split}.safetensors"  # train: a corpus
CLEAN_MODEL = RESULTS + "/models/clean/model.safetensors"  # pre-trained, or `model.weights`
BACKBONE_MODEL = RESULTS + "/models/clean/{backbone}/model.safetensors"  # `models.<backbone>`
BACKDOOR_MODEL = RESULTS + "/models/backdoor/{dataset}/" + CHAIN + "/model.safetensors"
FEATURES = RESULTS + "/features/{dataset}/" + CHAIN + "/features.safetensors"
DELTA = RESULTS + "/defenses/" + RUN + "/delta.safetensors"
METRICS = RESULTS + "/metrics/" + RUN + "/metrics.json"
PROBE = RESULTS + "/probes/" + RUN + "/probe.safetensors"

TABLES = RESULTS + "/tables"
FIGURES = RESULTS + "/figures"
TABLE = TABLES + "/metrics.csv"  # the tidy table: one row per evaluated model
TABLE_JSON = TABLES + "/metrics.json"  # its summary, dvc.yaml's metrics
OVERVIEW = {"png": FIGURES + "/overview.png", "pdf": FIGURES + "/overview.pdf",
            "markdown": TABLES + "/metrics.md"}
LOSS_CURVES = {"png": FIGURES + "/loss_curves.png", "pdf": FIGURES + "/loss_curves.pdf",
               "csv": TABLES + "/loss_curves.csv"}
GALLERY = {"png": FIGURES + "/gallery/{dataset}_triggers.png",
           "pdf": FIGURES + "/gallery/{dataset}_triggers.pdf",
           "perturbations_png": FIGURES + "/gallery/{dataset}_perturbations.png",
           "perturbations_pdf": FIGURES + "/gallery/{dataset}_perturbations.pdf"}
PAPER = RESULTS + "/paper/{paper}/{item}"  # + .csv/.md/.tex (tables) or .png/.pdf (figures)
CAPTIONS = RESULTS + "/paper/captions.md"
AUDIT = RESULTS + "/audit"


class _Keep(dict):
    def __missing__(self, field: str) -> str:
        return "{" + field + "}"


def fill(template: str, **values) -> str:
    """`template` with the fields in `values` set and the others kept as `{field}`."""
    return template.format_map(_Keep(values))
