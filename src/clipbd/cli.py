"""`python -m clipbd <verb>`: one verb per workflow rule. `python -m clipbd <verb> --help`.

The command line is built from the verbs' declarations (clipbd.verbs): a run imports only its
own verb's module; `--help` lists them all.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from clipbd import verbs


def parser(declared: dict[str, verbs.Verb] | None = None) -> argparse.ArgumentParser:
    """The command line of the `declared` verbs (default: every verb)."""
    declared = verbs.every() if declared is None else declared
    p = argparse.ArgumentParser(prog="python -m clipbd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, v in declared.items():
        sp = sub.add_parser(name, help=v.help.split("\n")[0], description=v.help,
                            epilog=v.epilog or None,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("--cfg", default="{}", help="resolved config of this step (JSON)")
        sp.add_argument("--code", default="", help="code fingerprint, recorded in the sidecar")
        sp.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
        for a in v.args:
            kw = dict(a.kw)
            if a.flag.startswith("--") and "default" not in kw:
                kw["required"] = True
            sp.add_argument(a.flag, **kw)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    one = verbs.get(argv[0]) if argv and not argv[0].startswith("-") else None
    declared = {one.name: one} if one else verbs.every()
    args = parser(declared).parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    v = declared[args.verb]
    if not v.job:  # run by hand or always: the verb reads its own arguments
        return v.run(args)
    import torch

    from clipbd import numerics
    from clipbd.artifacts import job_outputs

    numerics.apply()  # a job on CUDA: the deterministic option (clipbd.numerics)
    if args.threads:
        torch.set_num_threads(args.threads)
    with job_outputs(v.outputs(args)):  # published complete or not at all
        v.run(**v.kwargs(args, json.loads(args.cfg)))
    return 0
