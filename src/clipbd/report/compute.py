"""RVPT Table 9 (compute per defense) from the defenses' deltas and their sidecars: wall time
of the `defend` job, trainable parameters stored in the delta (what the defense changes;
index tensors such as the prompted block numbers are not parameters), tuning samples (the
few-shot draw, or `n_pairs` for CleanCLIP's clean corpus). Mean over the deltas given
(attacks, seeds). Peak memory is not recorded by the pipeline and is left out.
"""
from __future__ import annotations

import json
import struct
from dataclasses import asdict

import pandas as pd

from clipbd import paths
from clipbd.artifacts import read_json
from clipbd.report.paper import DEFENSE
from clipbd.report.tables import to_csv, to_latex, to_markdown

FLOAT = ("F64", "F32", "F16", "BF16")


def trainable(path: str) -> int:
    """Float elements in a safetensors file, from its header alone."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total = 0
    for name, info in header.items():
        if name != "__metadata__" and info["dtype"] in FLOAT:
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total


def samples(side: dict) -> int:
    params = side["config"].get("params", {})
    if params.get("n_pairs"):
        return int(params["n_pairs"])
    for path in side["inputs"]:
        if "/fewshot/" in path:
            return len(read_json(path)["indices"])
    return 0


def frame(deltas: list[str]) -> pd.DataFrame:
    rows = []
    for path in deltas:
        side = read_json(f"{path}.json")
        rows.append({"defense": side["config"]["defense"], "wall_time_s": side["wall_time_s"],
                     "parameters": trainable(path), "samples": samples(side)})
    return pd.DataFrame(rows, columns=["defense", "wall_time_s", "parameters", "samples"])


def table(deltas: list[str]) -> pd.DataFrame:
    df = frame(deltas)
    means = df.groupby("defense").mean()
    order = [d for d in DEFENSE if d in means.index]
    out = pd.DataFrame(
        {("", "time (s)"): [f"{means.loc[d, 'wall_time_s']:.1f}" for d in order],
         ("", "parameters"): [f"{means.loc[d, 'parameters']:,.0f}" for d in order],
         ("", "samples"): [f"{means.loc[d, 'samples']:,.0f}" for d in order]},
        index=[DEFENSE[d] for d in order])
    out.index.name = "method"
    return out


def write(deltas: list[str], csv: str, md: str, tex: str) -> list[str]:
    from clipbd.artifacts import atomic_path

    t = table(deltas)
    title = "RVPT Table 9: compute per defense (mean over the runs tuned)"
    for path, text in ((csv, to_csv(t)), (md, to_markdown(t, title)), (tex, to_latex(t, title))):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return [csv, md, tex]


def deltas_of(runs, dataset: str, shots: int) -> list[str]:
    """The deltas Table 9 reads: default variants on `dataset` at `shots` (attacks, seeds)."""
    return sorted(paths.fill(paths.DELTA, **asdict(r)) for r in runs
                  if r.dataset == dataset and r.defense != "none" and r.defense_variant == "default"
                  and r.attack_variant == "default" and r.shots == shots)
