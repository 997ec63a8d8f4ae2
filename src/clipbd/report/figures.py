"""The embedded study's overview: CA and ASR per attack x defense (figure + Markdown table)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from clipbd.artifacts import atomic_path  # noqa: E402
from clipbd.report.tables import STD_NOTE, cell, seeds_note  # noqa: E402


def _pct(x) -> str:
    return "—" if pd.isna(x) else f"{100 * x:.2f}"


def markdown(df: pd.DataFrame) -> str:
    """Mean over seeds; cells are ASR (CA) in percent, as in the papers, "± std, n=N" over
    several seeds (sample std, ddof=1; clipbd.report.tables.cell)."""
    lines = ["| dataset | attack | defense | shots | ASR (CA) | PA |", "|---|---|---|---|---|---|"]
    for (dataset, attack, defense, shots), part in df.groupby(
            ["dataset", "attack", "defense", "shots"], dropna=False):
        lines.append(f"| {dataset} | {attack} | {defense} | {shots} | "
                     f"{cell(part, 'asr_ca')} | {cell(part, 'pa')} |")
    several = df.groupby(["dataset", "attack", "defense", "shots"], dropna=False).size().max() > 1
    note = f"\n{STD_NOTE}\n" if len(df) and several else ""
    return "\n".join(lines) + "\n" + note + "".join(matrices(df))


def _default_variants(df: pd.DataFrame) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    for col in ("attack_variant", "defense_variant"):
        if col in df:
            keep &= df[col].fillna("default") == "default"
    return df[keep]


def matrices(df: pd.DataFrame) -> list[str]:
    """Per dataset and shot count: defenses x attacks, "ASR (CA)" cells and their average
    over the attacks (CBPT's main-table layout). Default variants only; a missing run is "—"."""
    df = _default_variants(df)
    out = []
    for (dataset, shots), part in df[df.shots > 0].groupby(["dataset", "shots"]):
        rows = pd.concat([df[(df.dataset == dataset) & (df.defense == "none")], part])
        attacks = sorted(a for a in rows.attack.unique() if a != "clean")
        defenses = sorted(rows.defense.unique(), key=lambda d: (d != "none", d))
        mean = rows.groupby(["defense", "attack"])[["asr", "ca"]].mean()
        by = dict(list(rows.groupby(["defense", "attack"])))
        head = ["defense", *attacks, "average"]
        lines = [f"\n### {dataset}, {shots} shots: ASR (CA) in %\n",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for d in defenses:
            cells, asrs, cas = [], [], []
            for a in attacks:
                if (d, a) in mean.index:
                    asr, ca = mean.loc[(d, a)]
                    cells.append(cell(by[(d, a)], "asr_ca"))
                    asrs.append(asr)
                    cas.append(ca)
                else:
                    cells.append("—")
            avg = (f"{_pct(sum(asrs) / len(asrs))} ({_pct(sum(cas) / len(cas))})"
                   if asrs and len(asrs) == len(attacks) else "—")
            lines.append("| " + " | ".join([d, *cells, avg]) + " |")
        out.append("\n".join(lines) + "\n")
    return out


def overview(df: pd.DataFrame, png: str, pdf: str) -> None:
    long = df.melt(id_vars=["dataset", "attack", "defense"], value_vars=["ca", "asr"],
                   var_name="metric", value_name="value").dropna(subset=["value"])
    long["metric"] = long["metric"].map({"ca": "clean accuracy (CA)", "asr": "attack success (ASR)"})
    attacks = sorted(long["attack"].unique(), key=lambda a: (a != "clean", a))
    defenses = sorted(long["defense"].unique(), key=lambda d: (d != "none", d))
    sns.set_theme(style="whitegrid", context="paper", palette="colorblind")
    grid = sns.catplot(data=long, x="attack", y="value", hue="defense", col="metric",
                       row="dataset", kind="bar", height=2.6, aspect=1.1, errorbar="sd",
                       sharey=True, order=attacks, hue_order=defenses)
    grid.set(ylim=(0, 1))
    grid.set_axis_labels("attack", "fraction of test images")
    grid.set_titles("{row_name}: {col_name}")
    if seeds_note(df):  # one seed: the figure as before
        grid.figure.suptitle(f"bars: {seeds_note(df)}", y=1.02, fontsize=8)
    for ax in grid.axes.flat:  # eight attack names do not fit side by side at this width
        ax.tick_params(axis="x", labelrotation=35)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    for path in (png, pdf):
        with atomic_path(path) as tmp:
            grid.savefig(tmp, format=path.rsplit(".", 1)[1], dpi=200, bbox_inches="tight")
    plt.close("all")


def write_markdown(df: pd.DataFrame, out: str) -> None:
    with atomic_path(out) as tmp:
        tmp.write_text(markdown(df))
