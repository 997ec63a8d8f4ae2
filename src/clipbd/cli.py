"""`python -m clipbd <verb>`: one verb per workflow rule. `python -m clipbd <verb> --help`."""
from __future__ import annotations

import argparse
import json
import logging
import sys


def _kv(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {item!r}")
        out[name] = path
    return out


VERBS = {
    "prepare": ("Prepare a dataset's train/test splits (+ manifests).",
                [("--out-train", {}), ("--out-test", {})]),
    "pretrain": ("Pre-train the clean CLIP from scratch, or import local weights.",
                 [("--split", {"nargs": "*", "default": []}), ("--out", {})]),
    "trigger": ("Draw an attack's trigger from the seed and store it.", [("--out", {})]),
    "learn-trigger": ("Optimize a learned trigger (SSBA, TrojVQA, BadCLIP) on training data.",
                      [("--model", {"default": ""}), ("--split", {"nargs": "*", "default": []}),
                       ("--out", {})]),
    "poison": ("Build the poisoned fine-tuning corpus.",
               [("--trigger", {}), ("--split", {"nargs": "*", "default": []}), ("--out", {})]),
    "poison-test": ("Materialize a triggered test set.",
                    [("--trigger", {}), ("--test", {}), ("--out", {})]),
    "backdoor": ("Fine-tune the clean CLIP on a poisoned corpus.",
                 [("--clean", {}), ("--poisoned", {}), ("--out", {})]),
    "fewshot": ("Draw k images per class (seeded, stratified).", [("--train", {}), ("--out", {})]),
    "defend": ("Fit a defense on few-shot clean data; store only its delta.",
               [("--model", {}), ("--fewshot", {}), ("--train", {}),
                ("--trigger", {"default": ""}), ("--out", {})]),
    "evaluate": ("Metrics (CA, ASR, ASR_all, PA) of a model + defense delta.",
                 [("--model", {}), ("--delta", {"default": ""}), ("--test", {}),
                  ("--poisoned", {"default": ""}), ("--features", {"default": ""}),
                  ("--out", {})]),
    "features": ("Encode a model's clean and triggered test images once (shared cache).",
                 [("--model", {}), ("--test", {}), ("--poisoned", {"default": ""}),
                  ("--out", {})]),
    "aggregate": ("Collect metrics JSON files into the tidy table.",
                  [("--out", {}), ("--json", {"default": "", "help": "also the scores per model as JSON "
                                                 "(dvc.yaml's metrics)"}),
                   ("metrics", {"nargs": "*"})]),
    "figure": ("Overview figure (PNG+PDF) and Markdown table from the tidy table.",
               [("--table", {}), ("--png", {}), ("--pdf", {}), ("--markdown", {})]),
    "loss-curves": ("Training loss curves (PNG+PDF, long CSV) of the jobs behind metrics JSONs.",
                    [("--png", {}), ("--pdf", {}), ("--csv", {}), ("metrics", {"nargs": "*"})]),
    "gallery": ("Clean vs triggered images per attack, and the benign perturbations.",
                [("--test", {}), ("--triggered", {"nargs": "*", "default": []}),
                 ("--seed", {"type": int, "default": 0}), ("--png", {}), ("--pdf", {}),
                 ("--perturbations-png", {}), ("--perturbations-pdf", {})]),
    "audit": ("Audit the provenance chain of every final table.\n\n"
              "Exit status (the first that applies; the report's `Verdict:` line says what\n"
              "was found):\n"
              "  1  an artifact is modified or missing: restore or rebuild it\n"
              "  4  a --recompute artifact differs from its recorded sha256, or could not\n"
              "     be rebuilt: its job does not reproduce it\n"
              "  3  an artifact is stale (other code, config or inputs): rerun the workflow\n"
              "  2  the --configfile cannot be read (the message names the key or file)\n"
               "  0  everything ok",
              [("--root", {"default": "."}),
               ("--configfile", {"default": "", "help": "current config, read as the workflow "
                                 "reads a --configfile (with what it `extends`; default: the "
                                 "embedded config/config.yaml of the root; --cfg: resolved JSON)"}),
               ("--out-dir", {"default": "results/audit"}),
               ("--recompute", {"nargs": "+", "default": [], "metavar": "ARTIFACT",
                                "help": "also rebuild these artifacts (paths under the root) "
                                "in a scratch directory, with the job Snakemake would run, "
                                "and compare their sha256 with the recorded one"}),
               ("--snakefile", {"default": "", "help": "workflow for --recompute (default: "
                                "the root's Snakefile, else the one clipbd comes from)"})]),
    "probe": ("Per-layer resistivity, features, attention of a model (RVPT Figs. 1, 4, 5).",
              [("--model", {}), ("--delta", {"default": ""}), ("--test", {}),
               ("--poisoned", {}), ("--n", {"type": int, "default": 200}), ("--out", {})]),
    "paper": ("Build one paper table (CSV+MD+LaTeX) or figure (PNG+PDF) from the tidy table.",
              [("--item", {}), ("--table", {"default": ""}),
               ("--probe", {"nargs": "*", "default": []}),
               ("--deltas", {"nargs": "*", "default": []}), ("--prefix", {})]),
    "paper-captions": ("Write the caption file: every paper item built and every one skipped.",
                       [("--plan", {}), ("--out", {})]),
    "import-weights": ("Convert a CLIP weight file (OpenAI TorchScript, open_clip .pt/.bin, "
                       "safetensors) once into clipbd's safetensors + sidecar.",
                       [("src", {"metavar": "SRC", "help": "the weight file (formats below)"}),
                        ("--arch", {"help": "open_clip architecture, e.g. ViT-B-32-quickgelu"}),
                        ("--activation", {"default": "", "choices": ["quick_gelu", "gelu"],
                                          "help": "what the weights were trained with (open_clip "
                                                  "files only; OpenAI's is quick_gelu)"}),
                        ("--out", {"help": "the clipbd safetensors file to write"})]),
}
USER_VERBS = {"import-weights"}  # run by hand, once, before a study; no rule calls them

from clipbd.supervised.cli import VERBS as _SUPERVISED_VERBS  # noqa: E402 (FST's own protocol)

VERBS.update(_SUPERVISED_VERBS)

# Arguments naming a job's outputs: written via `artifacts.job_outputs` (published complete or not at all).
OUTPUT_ARGS = ("out", "out_train", "out_test", "png", "pdf", "markdown", "perturbations_png",
               "perturbations_pdf")


def _audit(args) -> int:
    from pathlib import Path

    from clipbd import audit, config

    if args.cfg.strip() not in ("", "{}"):
        current = json.loads(args.cfg)
    else:
        path = args.configfile or Path(args.root) / "config" / "config.yaml"
        try:  # the file with what it `extends`, as the workflow reads it (config.study)
            current = config.load(path) if Path(path).is_file() else None
        except config.ConfigError as err:
            sys.stderr.write(f"clipbd config error: {err}\n")
            return 2
    if current is not None:  # the fingerprints it expects hold the numerics settings
        from clipbd import numerics

        numerics.export(current["numerics"])
    return audit.main(args.root, current, args.out_dir, args.recompute, args.snakefile,
                      args.configfile or None)


def _job(args):
    """Enter `job_outputs` for this verb's outputs; returns the function that publishes them."""
    from clipbd.artifacts import job_outputs

    ctx = job_outputs([getattr(args, a, None) or "" for a in OUTPUT_ARGS])
    ctx.__enter__()
    return lambda: ctx.__exit__(None, None, None)


def _sidecars(args, outs, step, inputs, t0) -> None:
    """Provenance of the tables and figures (what `audit` starts from)."""
    from clipbd.artifacts import write_sidecar

    for out in outs:
        write_sidecar(out, step=step, config={}, inputs=inputs, code=args.code, seed=None,
                      started=t0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clipbd", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (help_, args) in VERBS.items():
        extra = {}
        if verb == "import-weights":
            from clipbd.models.convert import HELP

            extra = {"epilog": HELP}
        sp = sub.add_parser(verb, help=help_.split("\n")[0], description=help_,
                            formatter_class=argparse.RawDescriptionHelpFormatter, **extra)
        sp.add_argument("--cfg", default="{}", help="resolved config of this step (JSON)")
        sp.add_argument("--code", default="", help="code fingerprint, recorded in the sidecar")
        sp.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
        for name, kw in args:
            if name.startswith("--") and "default" not in kw:
                kw = {**kw, "required": True}
            sp.add_argument(name, **kw)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verb == "audit":
        return _audit(args)
    from clipbd import numerics

    numerics.apply()  # a job on CUDA: the deterministic option (clipbd.numerics)
    if args.verb.startswith("sup-"):  # the supervised track (clipbd.supervised.cli)
        from clipbd.supervised.cli import run

        return run(args)
    import time

    import torch

    from clipbd import steps

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = json.loads(args.cfg)
    v = args.verb
    if v == "import-weights":  # its own output handling: SRC must not be cleared as an output
        from clipbd.models import convert

        return convert.main(args)
    t0, publish = time.time(), _job(args)
    if v == "prepare":
        steps.prepare(cfg, args.out_train, args.out_test, args.code, args.threads)
    elif v == "pretrain":
        steps.pretrain(cfg, _kv(args.split), args.out, args.code)
    elif v == "trigger":
        steps.trigger(cfg, args.out, args.code)
    elif v == "learn-trigger":
        steps.learn_trigger(cfg, args.model, _kv(args.split), args.out, args.code)
    elif v == "poison":
        steps.poison(cfg, args.trigger, _kv(args.split), args.out, args.code)
    elif v == "poison-test":
        steps.poison_test(cfg, args.trigger, args.test, args.out, args.code)
    elif v == "backdoor":
        steps.backdoor(cfg, args.clean, args.poisoned, args.out, args.code)
    elif v == "fewshot":
        steps.sample_fewshot(cfg, args.train, args.out, args.code)
    elif v == "defend":
        steps.defend(cfg, args.model, args.fewshot, args.train, args.out, args.code,
                     args.trigger)
    elif v == "evaluate":
        steps.evaluate(cfg, args.model, args.delta, args.test, args.poisoned, args.out, args.code,
                       args.features)
    elif v == "features":
        from clipbd import features

        features.write(cfg, args.model, args.test, args.poisoned, args.out, args.code)
    elif v == "aggregate":
        from clipbd.report import aggregate

        df = aggregate.table(args.metrics)
        aggregate.write_csv(df, args.out)
        if args.json:
            from clipbd.artifacts import write_json

            write_json(args.json, aggregate.summary(df))
        _sidecars(args, [args.out, *filter(None, [args.json])], "aggregate", args.metrics, t0)
    elif v == "figure":
        import pandas as pd

        from clipbd.report import figures

        df = pd.read_csv(args.table)
        figures.overview(df, args.png, args.pdf)
        figures.write_markdown(df, args.markdown)
        _sidecars(args, [args.png, args.pdf, args.markdown], "figure", [args.table], t0)
    elif v == "loss-curves":
        from clipbd.report import loss_curves

        found = loss_curves.collect(args.metrics)
        loss_curves.figure(found, args.png, args.pdf)
        loss_curves.write_csv(found, args.csv)
        _sidecars(args, [args.png, args.pdf, args.csv], "loss_curves",
                  [r["artifact"] for r in found], t0)
    elif v == "gallery":
        from clipbd.data.store import load_split
        from clipbd.report import gallery

        test = load_split(args.test)
        triggered = {name: load_split(path) for name, path in _kv(args.triggered).items()}
        gallery.triggers(test, triggered, args.png, args.pdf)
        gallery.perturbations(test, args.perturbations_png, args.perturbations_pdf, args.seed)
        _sidecars(args, [args.png, args.pdf, args.perturbations_png, args.perturbations_pdf],
                  "gallery", [args.test, *_kv(args.triggered).values()], t0)
    elif v in ("probe", "paper", "paper-captions"):
        _report(args, cfg, t0)
    publish()
    return 0


def _report(args, cfg: dict, t0: float) -> None:
    """The paper verbs (clipbd.report.plan, clipbd.report.probe)."""
    import pandas as pd

    if args.verb == "probe":
        from clipbd.report.probe import probe

        probe(cfg, args.model, args.delta, args.test, args.poisoned, args.out, args.code, args.n)
        return
    from clipbd.artifacts import atomic_path
    from clipbd.report import plan

    if args.verb == "paper":
        probes = _kv(args.probe)
        df = pd.read_csv(args.table) if args.table else None
        outs = plan.make(args.item, df, args.prefix, probes, args.deltas)
        inputs = [p for p in (args.table, *probes.values(), *args.deltas) if p]
        _sidecars(args, outs, "paper", inputs, t0)
        return
    spec = json.loads(args.plan)
    with atomic_path(args.out) as tmp:
        tmp.write_text(plan.captions(spec["tables"], spec["figures"], spec["skipped"],
                                     spec["galleries"]))
