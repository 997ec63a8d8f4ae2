"""`python -m clipbd audit`: for every number in every final table, the artifacts, configs and
code that produced it, and whether they are still intact (see `chain` for the statuses).

Writes `<out-dir>/audit.json` (machine-readable), `audit.csv` (one row per artifact) and
`audit.md` (human-readable, also printed). Exit status 1 when any artifact is modified or
missing, else 0 (stale artifacts are reported, not fatal: rerunning the workflow rebuilds them).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from clipbd.artifacts import atomic_path, write_json
from clipbd.audit.chain import Auditor, Entry, final_tables

FATAL = ("modified", "missing")
TABLE = "results/tables/metrics.csv"


def dvc_status(root: Path) -> dict:
    """DVC's own view, when DVC is installed and the repository initialised."""
    exe = shutil.which("dvc") or shutil.which("dvc", path=os.path.dirname(sys.executable))
    if not exe or not (root / ".dvc").is_dir():
        return {"state": "not initialised", "text": "dvc: not initialised"}
    try:
        res = subprocess.run([exe, "status", "--json"], cwd=root, capture_output=True,
                             text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"state": "error", "text": "dvc: `dvc status` timed out"}
    if res.returncode != 0:
        return {"state": "error", "text": f"dvc: `dvc status` failed: {res.stderr.strip()[-500:]}"}
    try:
        changes = json.loads(res.stdout or "{}")
    except ValueError:
        changes = {"raw": res.stdout.strip()}
    text = "dvc: up to date" if not changes else f"dvc: {len(changes)} stage(s)/file(s) changed"
    return {"state": "clean" if not changes else "changed", "changes": changes, "text": text}


def audit(root: str | Path = ".", current: dict | None = None,
          tables: list[str] | None = None) -> dict:
    root = Path(root)
    auditor = Auditor(root, current)
    starts = tables if tables is not None else final_tables(root)
    if tables is None and TABLE not in starts:
        starts.insert(0, TABLE)  # the tidy table is always expected: reported missing if absent
    for path in starts:
        auditor.visit(path)
    entries = auditor.finish()
    counts = Counter(e.status for e in entries)
    return {"root": str(root.resolve()), "tables": starts,
            "summary": {s: counts.get(s, 0) for s in ("ok", "stale", "modified", "missing")},
            "dvc": dvc_status(root), "artifacts": [dataclasses.asdict(e) for e in entries]}


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"# Audit of {report['root']}", "",
             f"{len(report['artifacts'])} artifacts: " + ", ".join(f"{v} {k}" for k, v in s.items()),
             report["dvc"]["text"], ""]
    bad = [a for a in report["artifacts"] if a["status"] != "ok"]
    if bad:
        lines += ["| status | artifact | why |", "|---|---|---|"]
        for a in bad:
            why = "; ".join(r for r in a["reasons"] if not r.startswith("note"))
            lines.append(f"| {a['status']} | {a['path']} | {why.replace('|', '/')} |")
    else:
        lines.append("Every artifact is intact and up to date.")
    return "\n".join(lines) + "\n"


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "step", "status", "reasons", "inputs", "used_by"])
    for a in report["artifacts"]:
        w.writerow([a["path"], a["step"], a["status"], " | ".join(a["reasons"]),
                    " ".join(a["inputs"]), " ".join(sorted(set(a["used_by"])))])
    return buf.getvalue()


def main(root: str, current: dict | None, out_dir: str | None) -> int:
    report = audit(root, current)
    text = markdown(report)
    if out_dir:
        out = Path(out_dir)
        write_json(out / "audit.json", report)
        for name, body in (("audit.csv", to_csv(report)), ("audit.md", text)):
            with atomic_path(out / name) as tmp:
                tmp.write_text(body)
    sys.stdout.write(text)
    return 1 if any(report["summary"][s] for s in FATAL) else 0


__all__ = ["Entry", "audit", "dvc_status", "main", "markdown", "to_csv"]
