"""`python -m clipbd audit`: for every number in every final table, the artifacts, configs and
code that produced it, and whether they are still intact (see `chain` for the statuses).

Writes `<out-dir>/audit.json` (machine-readable), `audit.csv` (one row per artifact) and
`audit.md` (human-readable, also printed). `--recompute ARTIFACT ...` also rebuilds those
artifacts in a scratch directory and compares their sha256 with the recorded one (`recompute`).

Exit status (the first that applies; `EXIT` below, also in `--help` and the README):
1 something is modified or missing: a recorded number can no longer be traced to intact files;
4 a recomputed artifact differs (or could not be rebuilt): the job does not reproduce it;
3 something is stale: made by other code, config or inputs; rerun the workflow;
0 everything is ok (and every recomputed artifact reproduced).
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

from clipbd import paths
from clipbd.artifacts import atomic_path, write_json
from clipbd.audit.chain import Auditor, Entry, final_tables

FATAL = ("modified", "missing")
TABLE = paths.TABLE
EXIT = {"damaged": 1, "differs": 4, "stale": 3, "ok": 0}


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
    lines.insert(3, verdict(report))
    bad = [a for a in report["artifacts"] if a["status"] != "ok"]
    if bad:
        lines += ["| status | artifact | why |", "|---|---|---|"]
        for a in bad:
            why = "; ".join(r for r in a["reasons"] if not r.startswith("note"))
            lines.append(f"| {a['status']} | {a['path']} | {why.replace('|', '/')} |")
    else:
        lines.append("Every artifact is intact and up to date.")
    if report.get("recompute"):
        lines += ["", "## Recomputed in a scratch directory", "",
                  "| result | artifact | why |", "|---|---|---|"]
        for r in report["recompute"]:
            why = str(r.get("reason", "")).replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['result']} | {r['path']} | {why} |")
    return "\n".join(lines) + "\n"


def exit_status(report: dict) -> tuple[int, str]:
    """(exit code, category) of a report: see the module docstring."""
    s = report["summary"]
    if any(s[k] for k in FATAL):
        return EXIT["damaged"], "damaged"
    if any(r["result"] in ("differs", "failed") for r in report.get("recompute", [])):
        return EXIT["differs"], "differs"
    if s["stale"]:
        return EXIT["stale"], "stale"
    return EXIT["ok"], "ok"


def verdict(report: dict) -> str:
    code, category = exit_status(report)
    if not code:
        return "Verdict: ok (exit 0)."
    found = [f"{report['summary'][k]} {k}" for k in ("modified", "missing", "stale")
             if report["summary"][k]]
    found += [f"{n} {r} on recompute" for r, n in Counter(
        r["result"] for r in report.get("recompute", [])
        if r["result"] in ("differs", "failed")).items()]
    act = {"damaged": "restore or rebuild the modified/missing files",
           "differs": "the job does not reproduce what was recorded",
           "stale": "rerun the workflow to rebuild them"}[category]
    return f"Verdict: NOT OK (exit {code}): {', '.join(found)}; {act}."


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "step", "status", "reasons", "inputs", "used_by"])
    for a in report["artifacts"]:
        w.writerow([a["path"], a["step"], a["status"], " | ".join(a["reasons"]),
                    " ".join(a["inputs"]), " ".join(sorted(set(a["used_by"])))])
    return buf.getvalue()


def main(root: str, current: dict | None, out_dir: str | None,
         recompute_paths: list[str] | None = None, snakefile: str = "",
         configfile: str | None = None) -> int:
    report = audit(root, current)
    if recompute_paths:
        report["recompute"] = _recompute(Path(root), recompute_paths, snakefile, configfile,
                                         current)
    text = markdown(report)
    if out_dir:
        out = Path(out_dir)
        write_json(out / "audit.json", report)
        for name, body in (("audit.csv", to_csv(report)), ("audit.md", text)):
            with atomic_path(out / name) as tmp:
                tmp.write_text(body)
    sys.stdout.write(text)
    code, _ = exit_status(report)
    if code:
        sys.stderr.write(verdict(report) + "\n")
    return code


def _recompute(root: Path, paths: list[str], snakefile: str, configfile: str | None,
               current: dict | None) -> list[dict]:
    import tempfile

    from clipbd.audit import recompute

    rel = [os.path.relpath(Path(p).resolve(), root.resolve()) if Path(p).is_absolute()
           else p for p in paths]
    sf = Path(snakefile) if snakefile else recompute.default_snakefile(root)
    if configfile or current is None:  # (Snakemake runs in the root: an absolute path)
        return recompute.recompute(root, rel, sf, configfile and str(Path(configfile).resolve()))
    with tempfile.TemporaryDirectory() as d:  # the resolved config the audit was given
        cfg = Path(d) / "config.json"  # (JSON is YAML to Snakemake)
        cfg.write_text(json.dumps(current, default=str))
        return recompute.recompute(root, rel, sf, str(cfg))


__all__ = ["EXIT", "Entry", "audit", "dvc_status", "exit_status", "main", "markdown",
           "to_csv", "verdict"]
