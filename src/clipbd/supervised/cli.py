"""The supervised track's CLI verbs (registered in clipbd.cli; `python -m clipbd sup-... --help`).

Kept free of heavy imports: clipbd.cli reads VERBS at start-up for every verb.
"""
from __future__ import annotations

VERBS = {
    "sup-trigger": ("Supervised: draw a trigger (SSBA: learn it on the train split).",
                    [("--train", {"default": ""}), ("--out", {})]),
    "sup-train": ("Supervised: train + evaluate a ResNet-18 victim on poisoned data.",
                  [("--train", {}), ("--test", {}), ("--trigger", {}), ("--out", {}),
                   ("--metrics", {})]),
    "sup-defend": ("Supervised: purify a victim (FT/LP/FE-tuning/FT-init/FST), evaluate.",
                   [("--victim", {}), ("--train", {}), ("--test", {}), ("--trigger", {}),
                    ("--out", {}), ("--metrics", {})]),
    "sup-report": ("Supervised: CA/ASR table (CSV+MD) and rate/alpha figures (PNG+PDF).",
                   [("--alpha", {"type": float, "default": 0.2,
                                 "help": "FST alpha drawn in the rate figure"}),
                    ("--csv", {}), ("--markdown", {}), ("--rate-png", {}), ("--rate-pdf", {}),
                    ("--alpha-png", {}), ("--alpha-pdf", {}), ("metrics", {"nargs": "*"})]),
}
OUTPUTS = ("out", "metrics", "csv", "markdown", "rate_png", "rate_pdf", "alpha_png", "alpha_pdf")


def run(args) -> int:
    import json
    import time

    import torch

    from clipbd.artifacts import job_outputs, write_sidecar

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, v, t0 = json.loads(args.cfg), args.verb, time.time()
    outs = [getattr(args, a, "") or "" for a in OUTPUTS[:2]]
    if v == "sup-report":
        outs = [args.csv, args.markdown, args.rate_png, args.rate_pdf, args.alpha_png,
                args.alpha_pdf]
    with job_outputs(outs):
        if v == "sup-report":
            from clipbd.supervised import report

            report.write(args.metrics, args.alpha, *outs)
            for out in outs:
                write_sidecar(out, step="sup_report", config={"alpha": args.alpha},
                              inputs=args.metrics, code=args.code, seed=None, started=t0)
            return 0
        from clipbd.supervised import steps

        if v == "sup-trigger":
            steps.trigger(cfg, args.train, args.out, args.code)
        elif v == "sup-train":
            steps.train(cfg, args.train, args.test, args.trigger, args.out, args.metrics,
                        args.code)
        elif v == "sup-defend":
            steps.defend(cfg, args.victim, args.train, args.test, args.trigger, args.out,
                         args.metrics, args.code)
    return 0


def fingerprint(*files: str) -> str:
    """sha256 over `files` (package-relative) and every package file they import."""
    import hashlib

    from clipbd import fingerprint as fp, numerics

    h = hashlib.sha256(numerics.token().encode() + b"\n")  # which kernels run
    for rel in sorted(fp.closure(*files) | set(fp.CORE)):
        h.update(rel.encode() + b"\0" + fp._file_hash(rel).encode() + b"\n")
    return h.hexdigest()[:16]


def code_files(stage: str, attack: str = "", defense: str = "") -> tuple[str, ...]:
    """The files whose edit reruns a supervised job: its stage, its attack, its defense."""
    from pathlib import Path

    from clipbd.fingerprint import PKG
    from clipbd.supervised import attacks, defenses

    files = ["supervised/report.py"] if stage == "report" else ["supervised/steps.py"]
    if attack:
        files.append(str(Path(attacks.source_file(attack)).resolve().relative_to(PKG)))
    if defense:
        files.append(str(Path(defenses.REGISTRY.module_file(defense)).resolve().relative_to(PKG)))
    return tuple(files)
