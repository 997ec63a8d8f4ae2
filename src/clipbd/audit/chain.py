"""Walk the provenance chain from the final tables down to the raw data, checking each artifact.

table -> metrics.json -> defense delta / backdoored checkpoint -> poisoned data, trigger ->
clean model -> dataset splits (manifest) -> raw files. Every node gets one status:

* missing:  the file, or its provenance sidecar, is not there;
* modified: its sha256 differs from the one its sidecar (or, for a file without one, the
            artifacts made from it) recorded: someone changed it after it was written;
* stale:    intact, but made by other code (fingerprint), another config, or from inputs
            that have changed since (an upstream artifact was rebuilt or modified);
* ok.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from clipbd import paths
from clipbd.artifacts import read_json, sha256_file, sidecar_path
import clipbd.audit.expect as expect

RANK = {"ok": 0, "stale": 1, "modified": 2, "missing": 3}
RESULTS = paths.RESULTS
TABLE_NUMBERS = ("ca", "asr", "asr_all", "pa", "asr_image_key", "asr_text_key")


@dataclass
class Entry:
    path: str
    step: str = ""
    status: str = "ok"
    reasons: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    used_by: list[str] = field(default_factory=list)

    def flag(self, status: str, reason: str) -> None:
        if RANK[status] > RANK[self.status]:
            self.status = status
        self.reasons.append(f"{status}: {reason}")


class Auditor:
    def __init__(self, root: str | Path, current: dict | None):
        self.root = Path(root)
        self.current = current  # the resolved study config (None: no config checks)
        self.entries: dict[str, Entry] = {}
        self._sha: dict[str, str | None] = {}
        self._recorded: dict[str, list[tuple[str, str]]] = {}  # path -> [(child, sha)]

    def file(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def sha(self, path: str) -> str | None:
        if path not in self._sha:
            f = self.file(path)
            self._sha[path] = sha256_file(f) if f.is_file() else None
        return self._sha[path]

    def visit(self, path: str, child: str | None = None, recorded: str | None = None) -> Entry:
        """Audit `path` once; `child` recorded it as an input with hash `recorded`."""
        first = path not in self.entries
        entry = self.entries.setdefault(path, Entry(path))
        if child:
            entry.used_by.append(child)
            if recorded:
                self._recorded.setdefault(path, []).append((child, recorded))
        if first:
            self._check(entry)
        return entry

    def _check(self, e: Entry) -> None:
        if not self.file(e.path).is_file():
            e.flag("missing", "file not found")
            return
        side = sidecar_path(self.file(e.path))
        if not side.is_file():
            if self._inside(e.path) and not self._embedded(e):
                e.flag("missing", f"no provenance sidecar {side.name}")
            elif not self._inside(e.path):
                e.step = "external"
            return
        try:
            info = read_json(side)
        except (ValueError, OSError) as err:
            e.flag("modified", f"sidecar unreadable ({err})")
            return
        e.step = info.get("step", "")
        if info.get("sha256") != self.sha(e.path):
            e.flag("modified", f"sha256 {str(self.sha(e.path))[:12]} differs from the "
                               f"sidecar's {str(info.get('sha256'))[:12]}")
        self._provenance(e, info)

    def _inside(self, path: str) -> bool:
        """Under the root's results/: made by the workflow, so it must have a sidecar (files
        elsewhere, e.g. local weights or data kept in the repository, are the user's)."""
        try:
            return self.file(path).resolve().is_relative_to((self.root / RESULTS).resolve())
        except OSError:
            return False

    def _embedded(self, e: Entry) -> bool:
        """Metrics JSON written before they had sidecars carry their provenance inside."""
        try:
            prov = read_json(self.file(e.path)).get("provenance") if e.path.endswith(".json") else None
        except (ValueError, AttributeError):
            prov = None
        if not isinstance(prov, dict):
            return False
        e.step = prov.get("step", "")
        e.reasons.append("note: no sidecar; provenance read from the file, its own hash unrecorded")
        self._provenance(e, prov)
        return True

    def _provenance(self, e: Entry, info: dict) -> None:
        cfg = info.get("config") or {}
        code = info.get("code")
        want = expect.code(e.step, cfg) if code else None
        if code and want and code != want:
            e.flag("stale", f"code fingerprint {code} != current {want}")
        if self.current is not None and cfg:
            for key in expect.config_diffs(e.step, cfg, self.current, e.path):
                e.flag("stale", f"config `{key}` differs from the current config")
        for parent, recorded in (info.get("inputs") or {}).items():
            e.inputs.append(parent)
            self.visit(parent, e.path, recorded)
            now = self.sha(parent)
            if now is not None and recorded and now != recorded:
                e.flag("stale", f"input {parent} changed since ({recorded[:12]} -> {now[:12]})")
        if e.step == "aggregate":
            self._table_numbers(e)

    def _table_numbers(self, e: Entry) -> None:
        """Every number of the tidy table equals the one in the metrics JSON it came from."""
        import pandas as pd

        df = pd.read_csv(self.file(e.path))
        if "source" not in df.columns:
            return
        for i, row in df.iterrows():
            src = self.file(row["source"])
            if not src.is_file():
                continue
            try:
                metrics = read_json(src)["metrics"]
            except (ValueError, KeyError):
                continue
            for col in TABLE_NUMBERS:
                if col in row and col in metrics and not _same(row[col], metrics[col]):
                    e.flag("modified", f"row {i} `{col}` is {row[col]} in the table but "
                                       f"{metrics[col]} in {row['source']}")

    def finish(self) -> list[Entry]:
        """Files without a sidecar (raw data, local weights): modified if their hash no
        longer matches what the artifacts made from them recorded."""
        for path, records in self._recorded.items():
            e = self.entries[path]
            now = self.sha(path)
            if e.step == "external" and now is not None:
                for child, sha in records:
                    if sha != now:
                        e.flag("modified", f"sha256 {now[:12]} differs from {sha[:12]} "
                                           f"recorded by {child}")
                        break
        return sorted(self.entries.values(), key=lambda x: x.path)


def _same(a, b) -> bool:
    def empty(x):
        return x is None or (isinstance(x, float) and math.isnan(x))

    if empty(a) or empty(b):
        return empty(a) and empty(b)
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return json.dumps(a) == json.dumps(b)


def final_tables(root: Path) -> list[str]:
    """Every table and figure under results/tables and results/figures (not sidecars)."""
    out = []
    for sub in (paths.TABLES, paths.FIGURES):
        d = root / sub
        if d.is_dir():
            out += [str(p.relative_to(root)) for p in sorted(d.rglob("*"))
                    if p.is_file() and not p.name.endswith(".json") and not p.name.startswith(".")]
    return out
