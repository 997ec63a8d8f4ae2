"""The supervised track's table and figures (FST's motivating plot, alpha sensitivity).

* `table`: metrics JSONs -> one tidy row each (track, dataset, attack, poison_rate, defense,
  alpha, seed, ca, asr, ...), the CSV.
* `markdown`: per dataset, (attack, poisoning rate) x defense cells "CA / ASR" in percent,
  mean over seeds; FST columns carry their alpha.
* `rate_figure`: CA and ASR against the poisoning rate for FT / LP / FST (+ no defense).
* `alpha_figure`: CA and ASR of FST against alpha, for every setting with 2+ alphas.
Seaborn, colour-blind palette, PNG + PDF.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from clipbd.artifacts import atomic_path, read_json  # noqa: E402

FIRST = ["track", "dataset", "attack", "poison_rate", "defense", "alpha", "seed", "ca", "asr"]
ORDER = ["none", "ft", "lp", "fe_tuning", "ft_init", "fst"]
RATE_DEFENSES = ("none", "ft", "lp", "fst")


def table(paths: list[str]) -> pd.DataFrame:
    df = pd.DataFrame([read_json(p)["metrics"] | {"source": p} for p in paths])
    if df.empty:
        return pd.DataFrame(columns=FIRST)
    for col in FIRST:
        if col not in df:
            df[col] = None
    df = df[FIRST + sorted(c for c in df.columns if c not in FIRST)]
    df["order"] = df.defense.map({d: i for i, d in enumerate(ORDER)}).fillna(len(ORDER))
    df = df.sort_values(["dataset", "attack", "poison_rate", "order", "alpha", "seed"],
                        kind="stable").drop(columns="order")
    return df.reset_index(drop=True)


def label(defense: str, alpha) -> str:
    return f"{defense} α={alpha:g}" if pd.notna(alpha) else defense


def _pct(x) -> str:
    return "—" if pd.isna(x) else f"{100 * x:.1f}"


def markdown(df: pd.DataFrame) -> str:
    df = df.assign(column=[label(d, a) for d, a in zip(df.defense, df.alpha)])
    mean = df.groupby(["dataset", "attack", "poison_rate", "column"])[["ca", "asr"]].mean()
    cols = sorted(df.column.unique(), key=lambda c: (ORDER.index(c.split()[0])
                                                     if c.split()[0] in ORDER else 99, c))
    out = ["# Supervised track (FST protocol): CA / ASR in %, mean over seeds\n"]
    for dataset, part in df.groupby("dataset"):
        out += [f"\n## {dataset}\n", "| attack | poison rate | " + " | ".join(cols) + " |",
                "|---|---|" + "---|" * len(cols)]
        for (attack, rate), _ in part.groupby(["attack", "poison_rate"]):
            cells = []
            for c in cols:
                key = (dataset, attack, rate, c)
                cells.append(f"{_pct(mean.loc[key, 'ca'])} / {_pct(mean.loc[key, 'asr'])}"
                             if key in mean.index else "—")
            out.append(f"| {attack} | {rate:g} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _long(df: pd.DataFrame) -> pd.DataFrame:
    return df.melt(id_vars=[c for c in df.columns if c not in ("ca", "asr")],
                   value_vars=["ca", "asr"], var_name="metric", value_name="value").assign(
        metric=lambda d: d.metric.str.upper())


def _save(fig, png: str, pdf: str) -> None:
    for path in (png, pdf):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.rsplit(".", 1)[1], dpi=150, bbox_inches="tight")
    plt.close(fig)


def rate_figure(df: pd.DataFrame, alpha: float, png: str, pdf: str) -> None:
    """CA (top) and ASR (bottom) against the poisoning rate; one column per dataset x attack."""
    keep = df.defense.isin(RATE_DEFENSES) & ((df.defense != "fst") | (df.alpha == alpha))
    d = _long(df[keep]).assign(setting=lambda x: x.dataset + " / " + x.attack)
    settings = sorted(d.setting.unique()) or ["(no runs)"]
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(2, len(settings), figsize=(3.2 * len(settings), 5.2),
                             squeeze=False, sharey="row")
    palette = dict(zip(RATE_DEFENSES, sns.color_palette("colorblind", len(RATE_DEFENSES))))
    for j, s in enumerate(settings):
        for i, metric in enumerate(("CA", "ASR")):
            ax = axes[i, j]
            part = d[(d.setting == s) & (d.metric == metric)]
            if len(part):
                sns.lineplot(part, x="poison_rate", y="value", hue="defense", style="defense",
                             markers=True, dashes=False, palette=palette, ax=ax,
                             hue_order=[x for x in RATE_DEFENSES if x in set(part.defense)],
                             legend=(i == 0 and j == len(settings) - 1), errorbar=None)
                ax.set_xscale("log")
                rates = sorted(part.poison_rate.unique())
                ax.set_xticks(rates, [f"{r:g}" for r in rates])
                ax.minorticks_off()
            ax.set(title=s if i == 0 else "", xlabel="poisoning rate" if i else "",
                   ylabel=metric, ylim=(-0.02, 1.02))
    if axes[0, -1].get_legend():
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1),
                        title=f"defense (FST α={alpha:g})")
    _save(fig, png, pdf)


def alpha_figure(df: pd.DataFrame, png: str, pdf: str) -> None:
    fst = df[df.defense == "fst"]
    sweeps = [k for k, p in fst.groupby(["dataset", "attack", "poison_rate"])
              if p.alpha.nunique() > 1]
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, max(1, len(sweeps)), figsize=(3.4 * max(1, len(sweeps)), 3),
                             squeeze=False)
    palette = dict(zip(("CA", "ASR"), sns.color_palette("colorblind", 2)))
    for ax, (dataset, attack, rate) in zip(axes[0], sweeps):
        part = _long(fst[(fst.dataset == dataset) & (fst.attack == attack)
                         & (fst.poison_rate == rate)])
        sns.lineplot(part, x="alpha", y="value", hue="metric", style="metric", markers=True,
                     dashes=False, palette=palette, ax=ax, errorbar=None)
        ax.set_xscale("log")
        ax.set(title=f"{dataset} / {attack} / rate {rate:g}", xlabel="FST α", ylabel="",
               ylim=(-0.02, 1.02))
    if not sweeps:
        axes[0, 0].text(0.5, 0.5, "no alpha sweep in the grid", ha="center", va="center")
        axes[0, 0].set_axis_off()
    _save(fig, png, pdf)


def write(paths: list[str], alpha: float, csv: str, md: str, rate_png: str, rate_pdf: str,
          alpha_png: str, alpha_pdf: str) -> pd.DataFrame:
    df = table(paths)
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(md) as tmp:
        tmp.write_text(markdown(df))
    rate_figure(df, alpha, rate_png, rate_pdf)
    alpha_figure(df, alpha_png, alpha_pdf)
    return df
