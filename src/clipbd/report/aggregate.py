"""All metrics JSON files -> one tidy table (one row per evaluated model)."""
from __future__ import annotations

import pandas as pd

from clipbd.artifacts import atomic_path, read_json

FIRST = ["dataset", "attack", "defense", "shots", "seed", "ca", "asr", "asr_all", "pa"]


def table(paths: list[str]) -> pd.DataFrame:
    rows = [read_json(p)["metrics"] | {"source": p} for p in paths]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=FIRST)
    rest = sorted(c for c in df.columns if c not in FIRST)
    df = df[FIRST + rest]
    return df.sort_values(["dataset", "attack", "defense", "shots", "seed", "source"],
                          kind="stable").reset_index(drop=True)


def write_csv(df: pd.DataFrame, out: str) -> None:
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)


SCORES = ["ca", "asr", "asr_all", "pa"]


def summary(df: pd.DataFrame) -> dict:
    """The scores per evaluated model, keyed by its metrics folder (`dvc metrics diff` reads it):
    {"shapes/badnet/default/none/default/shots~0/seed~0": {"ca": .., "asr": .., ..}}."""
    out = {}
    for row in df.to_dict("records"):
        key = str(row["source"]).removesuffix("/metrics.json")
        key = key.split("/metrics/", 1)[1] if "/metrics/" in key else key
        out[key] = {s: float(row[s]) for s in SCORES if s in row and pd.notna(row[s])}
    return out
