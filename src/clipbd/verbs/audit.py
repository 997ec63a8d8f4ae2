"""`audit`: the provenance chain of every final table, checked (its rule always runs)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from clipbd import paths
from clipbd.verbs import arg, verb

HELP = """Audit the provenance chain of every final table.

Exit status (the first that applies; the report's `Verdict:` line says what
was found):
  1  an artifact is modified or missing: restore or rebuild it
  4  a --recompute artifact differs from its recorded sha256, or could not
     be rebuilt: its job does not reproduce it
  3  an artifact is stale (other code, config or inputs): rerun the workflow
  2  the --configfile cannot be read (the message names the key or file)
  0  everything ok"""


def _audit(args) -> int:
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


verb("audit", HELP,
     arg("--root", default="."),
     arg("--configfile", default="", help="current config, read as the workflow reads a "
         "--configfile (with what it `extends`; default: the embedded config/config.yaml of "
         "the root; --cfg: resolved JSON)"),
     arg("--out-dir", default=paths.AUDIT),
     arg("--recompute", nargs="+", default=[], metavar="ARTIFACT",
         help="also rebuild these artifacts (paths under the root) in a scratch directory, with "
         "the job Snakemake would run, and compare their sha256 with the recorded one"),
     arg("--snakefile", default="", help="workflow for --recompute (default: the root's "
         "Snakefile, else the one clipbd comes from)"),
     job=False)(_audit)
