"""`paper-captions`: the caption file, every paper item built and every one skipped."""
from __future__ import annotations

import json

from clipbd.artifacts import atomic_path
from clipbd.report import plan
from clipbd.verbs import arg, output, verb


@verb("paper-captions", "Write the caption file: every paper item built and every one skipped.",
      arg("--plan", "spec"), output())
def captions(spec, out):
    spec = json.loads(spec)
    with atomic_path(out) as tmp:
        tmp.write_text(plan.captions(spec["tables"], spec["figures"], spec["skipped"],
                                     spec["galleries"]))
