"""Training loss curves of a study, one panel per training stage (figure + long CSV).

The curves are the `loss_curves` every training job keeps in its artifact's sidecar
(`clipbd.train.curve`: at most 200 points, chunk means). They are found by walking the
provenance chain down from the metrics JSONs, so the figure shows exactly the training jobs
behind the study's numbers (not stale artifacts of another config left in results/).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from clipbd.artifacts import atomic_path, read_json, sidecar_path  # noqa: E402

STAGES = {"pretrain": "pre-training (contrastive)", "backdoor": "backdoor training (contrastive)",
          "learn_trigger": "learned triggers", "defend": "defense", "sup_train": "victim training",
          "sup_defend": "supervised defense"}
COLUMNS = ["stage", "panel", "artifact", "loop", "step", "loss", "n_steps", "chunk"]


def collect(metrics: list[str]) -> list[dict]:
    """{"artifact", "step", "panel", "curves"} for every ancestor with loss curves, sorted."""
    seen: set[str] = set()
    found: list[dict] = []
    todo = list(metrics)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        info = _provenance(path)
        todo += list((info.get("inputs") or {}).keys())
        if info.get("loss_curves"):
            step = info.get("step", "?")
            found.append({"artifact": path, "step": step, "panel": _panel(step, path),
                          "curves": info["loss_curves"]})
    order = list(STAGES)
    return sorted(found, key=lambda r: (order.index(r["step"]) if r["step"] in order
                                        else len(order), r["panel"], r["artifact"]))


def _provenance(path: str) -> dict:
    """The sidecar of an artifact, or the `provenance` a JSON artifact carries inside."""
    side = sidecar_path(path)
    if side.is_file():
        return read_json(side)
    if path.endswith(".json") and Path(path).is_file():
        data = read_json(path)
        return data.get("provenance") or {} if isinstance(data, dict) else {}
    return {}


def _panel(step: str, artifact: str) -> str:
    """Defenses get a panel each (results/defenses/<dataset>/<attack>/<variant>/<defense>/..)."""
    parts = Path(artifact).parts
    if step == "defend" and "defenses" in parts and len(parts) > parts.index("defenses") + 4:
        return f"{STAGES[step]}: {parts[parts.index('defenses') + 4]}"
    return STAGES.get(step, step)


def table(found: list[dict]) -> pd.DataFrame:
    rows = [{"stage": r["step"], "panel": r["panel"], "artifact": r["artifact"], "loop": loop,
             "step": s, "loss": v, "n_steps": c["n_steps"], "chunk": c["chunk"]}
            for r in found for loop, c in sorted(r["curves"].items())
            for s, v in zip(c["step"], c["loss"])]
    return pd.DataFrame(rows, columns=COLUMNS)


def _label(artifact: str, loop: str) -> str:
    parts = Path(artifact).parts
    short = "/".join(parts[2:-1] if parts[:1] == ("results",) else parts[:-1]) or artifact
    return short if loop == "train" else f"{short} ({loop})"


def figure(found: list[dict], png: str, pdf: str) -> None:
    panels = list(dict.fromkeys(r["panel"] for r in found)) or ["no training job in this study"]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        lines = [(r, loop, c) for r in found if r["panel"] == panel
                 for loop, c in sorted(r["curves"].items())]
        for r, loop, c in lines:
            ax.plot(c["step"], c["loss"], lw=1.2, label=_label(r["artifact"], loop),
                    ls="--" if loop != "train" else "-")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if lines and len(lines) <= 8:
            ax.legend(fontsize=6, loc="upper right")
        elif lines:
            ax.text(0.98, 0.98, f"{len(lines)} runs", transform=ax.transAxes, ha="right",
                    va="top", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    for path in (png, pdf):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.rsplit(".", 1)[1], dpi=150, bbox_inches="tight")
    plt.close(fig)


def write_csv(found: list[dict], out: str) -> None:
    with atomic_path(out) as tmp:
        table(found).to_csv(tmp, index=False)
