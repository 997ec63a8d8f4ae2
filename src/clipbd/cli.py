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
               [("--model", {}), ("--fewshot", {}), ("--train", {}), ("--out", {})]),
    "evaluate": ("Metrics (CA, ASR, ASR_all, PA) of a model + defense delta.",
                 [("--model", {}), ("--delta", {"default": ""}), ("--test", {}),
                  ("--poisoned", {"default": ""}), ("--out", {})]),
    "aggregate": ("Collect metrics JSON files into the tidy table.",
                  [("--out", {}), ("metrics", {"nargs": "*"})]),
    "figure": ("Overview figure (PNG+PDF) and Markdown table from the tidy table.",
               [("--table", {}), ("--png", {}), ("--pdf", {}), ("--markdown", {})]),
    "gallery": ("Clean vs triggered images per attack, and the benign perturbations.",
                [("--test", {}), ("--triggered", {"nargs": "*", "default": []}),
                 ("--seed", {"type": int, "default": 0}), ("--png", {}), ("--pdf", {}),
                 ("--perturbations-png", {}), ("--perturbations-pdf", {})]),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clipbd", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (help_, args) in VERBS.items():
        sp = sub.add_parser(verb, help=help_, description=help_)
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
    import torch

    from clipbd import steps
    from clipbd.report import aggregate, figures

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = json.loads(args.cfg)
    v = args.verb
    if v == "prepare":
        steps.prepare(cfg, args.out_train, args.out_test, args.code)
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
        steps.defend(cfg, args.model, args.fewshot, args.train, args.out, args.code)
    elif v == "evaluate":
        steps.evaluate(cfg, args.model, args.delta, args.test, args.poisoned, args.out, args.code)
    elif v == "aggregate":
        aggregate.write_csv(aggregate.table(args.metrics), args.out)
    elif v == "figure":
        import pandas as pd

        df = pd.read_csv(args.table)
        figures.overview(df, args.png, args.pdf)
        figures.write_markdown(df, args.markdown)
    elif v == "gallery":
        from clipbd.data.store import load_split
        from clipbd.report import gallery

        test = load_split(args.test)
        triggered = {name: load_split(path) for name, path in _kv(args.triggered).items()}
        gallery.triggers(test, triggered, args.png, args.pdf)
        gallery.perturbations(test, args.perturbations_png, args.perturbations_pdf, args.seed)
    return 0
