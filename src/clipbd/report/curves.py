"""Sweep figures from the tidy table: RVPT Fig. 3 (six ablation panels), CBPT's shots curve,
FST's alpha sensitivity. y = ASR and CA in % (solid / dashed), mean over seeds (± sd band).

A panel is drawn only when the grid varies its axis (two or more values); `panel_reasons`
says, for every panel that is not, which grid block would add it.
"""
from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from clipbd.report.paper import ATTACK, DEFENSE, main_shots  # noqa: E402
from clipbd.report.tables import seeds_note, select  # noqa: E402

log = logging.getLogger(__name__)
WIDTH = 3.4  # inches: one column of a two-column paper

# RVPT Fig. 3: panel -> (x column, filter, the grid block that sweeps it)
FIG3 = {
    "(a) shots": ("shots", {"defense": "rvpt", "defense_variant": "default"},
                  "defenses: [rvpt], shots: [1, 2, 4, 8, 16]"),
    "(b) alpha": ("alpha", {"defense": "rvpt"},
                  "defenses: [rvpt], defense_params: {alpha: [0.5, 1, 2, 4]}"),
    "(c) context length": ("length", {"defense": "rvpt"},
                           "defenses: [rvpt], defense_params: {length: [4, 16, 64]}"),
    "(d) depth from output": ("depth", {"defense": "rvpt", "depth_from": ("output", None)},
                              "defenses: [rvpt], defense_params: {depth: [1, 2, 3]}"),
    "(e) depth from input": ("depth", {"defense": "rvpt", "depth_from": "input"},
                             "defenses: [rvpt], defense_params: "
                             "{depth: [1, 2, 3], depth_from: [input]}"),
    "(f) margin": ("margin", {"defense": "rvpt"},
                   "defenses: [rvpt], defense_params: {margin: [-0.5, 0, 0.5]}"),
}
CBPT_SHOTS = ("shots", {"defense_variant": "default"},
              "defenses: [cbpt, coop], shots: [1, 2, 4, 8, 16]")
FST_ALPHA = ("alpha", {"defense": "fst"},
             "defenses: [fst], defense_params: {alpha: [0, 0.1, 0.2, 0.5]}")


def _points(df: pd.DataFrame, x: str, flt: dict) -> pd.DataFrame:
    if x not in df:
        return df.iloc[0:0]
    part = select(df, {"attack_variant": "default"}, flt)
    part = part[part[x].notna() & (part["attack"] != "clean")]
    if x == "shots":
        part = part[part["shots"] > 0]
    elif len(part):
        part = part[part["shots"] == main_shots(df)]
    return part


def varies(df: pd.DataFrame, x: str, flt: dict) -> bool:
    part = _points(df, x, flt)
    return x in part and part[x].nunique() >= 2


def panel_reasons(df: pd.DataFrame, panels: dict) -> dict[str, str]:
    return {name: f"the grid does not vary `{x}`; add a grid block with {block}"
            for name, (x, flt, block) in panels.items() if not varies(df, x, flt)}


def _long(part: pd.DataFrame, x: str, hue: str) -> pd.DataFrame:
    long = part.melt(id_vars=[x, hue, "seed"], value_vars=["asr", "ca"], var_name="metric",
                     value_name="value").dropna(subset=["value"])
    long["value"] = 100 * long["value"]
    long["metric"] = long["metric"].map({"asr": "ASR", "ca": "CA"})
    long[x] = long[x].astype(float)
    return long


def _panel(ax, part: pd.DataFrame, x: str, hue: str, labels: dict, title: str) -> None:
    """Series that vary along x only (a run at one x value alone is no curve)."""
    part = part.groupby(hue).filter(lambda g: g[x].nunique() >= 2)
    long = _long(part, x, hue)
    order = [labels.get(v, v) for v in labels if v in set(long[hue])]
    long[hue] = long[hue].map(lambda v: labels.get(v, v))
    palette = dict(zip(labels.values(), sns.color_palette("colorblind", len(labels))))
    sns.lineplot(data=long, x=x, y="value", hue=hue, style="metric", markers=True,
                 errorbar="sd", err_style="bars", ax=ax, palette=palette, hue_order=order,
                 style_order=["ASR", "CA"])
    ax.set(title=title, xlabel=x, ylabel="ASR / CA (%)", ylim=(-2, 102))
    values = sorted(long[x].unique())
    if x == "shots":
        ax.set_xscale("log", base=2)
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.minorticks_off()


def _save(fig, png: str, pdf: str) -> None:
    from clipbd.artifacts import atomic_path

    for path in (png, pdf):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.rsplit(".", 1)[1], dpi=200, bbox_inches="tight")
    plt.close(fig)


def panels_figure(df: pd.DataFrame, panels: dict, hue: str, labels: dict, png: str,
                  pdf: str, extra=None) -> list[str]:
    """One panel per varied axis; returns the panels drawn (skipped ones are logged)."""
    drawn = [p for p in panels if varies(df, panels[p][0], panels[p][1])]
    for name, reason in panel_reasons(df, panels).items():
        log.info("panel %s skipped: %s", name, reason)
    if not drawn:
        raise ValueError("no panel of this figure is covered by the grid: "
                         + "; ".join(panel_reasons(df, panels).values()))
    sns.set_theme(style="whitegrid", context="paper", palette="colorblind")
    cols = min(len(drawn), 3)
    rows = -(-len(drawn) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH * cols / 1.5, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, drawn):
        x, flt, _ = panels[name]
        _panel(ax, _points(df, x, flt), x, hue, labels, name)
        if extra:
            extra(ax, name, df)
    handles = {}
    for ax in axes.flat:
        if ax.get_legend() is not None:
            for h, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, h)
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(drawn):]:
        ax.set_axis_off()
    fig.tight_layout()
    if seeds_note(df):  # one seed: the figure as before
        fig.suptitle(f"points: {seeds_note(df)}", y=1.02, fontsize=7)
    fig.legend(handles.values(), handles.keys(), loc="upper center", fontsize=6,
               bbox_to_anchor=(0.5, 0.0), ncol=min(5, len(handles)), frameon=False)
    _save(fig, png, pdf)
    return drawn


def _vpt_reference(ax, name: str, df: pd.DataFrame) -> None:
    """Fig. 3(f): dashed lines at VPT's ASR (the FR loss ablated), per attack."""
    if name != "(f) margin":
        return
    vpt = select(df, {"defense": "vpt", "defense_variant": "default", "attack_variant": "default",
                      "shots": main_shots(df)})
    for i, (attack, part) in enumerate(vpt.groupby("attack")):
        ax.axhline(100 * part["asr"].mean(), ls=":", lw=1, color=sns.color_palette("colorblind")[i],
                   label=f"{ATTACK.get(attack, attack)}: FR ablated (VPT)")


def rvpt_fig3(df: pd.DataFrame, png: str, pdf: str) -> list[str]:
    return panels_figure(df, FIG3, "attack", ATTACK, png, pdf, extra=_vpt_reference)


def cbpt_shots(df: pd.DataFrame, png: str, pdf: str) -> list[str]:
    """CA/ASR vs shots, one line per trained defense, mean over attacks and seeds."""
    return panels_figure(df, {"CBPT: shots (mean over attacks)": CBPT_SHOTS}, "defense",
                         DEFENSE, png, pdf)


def fst_alpha(df: pd.DataFrame, png: str, pdf: str) -> list[str]:
    return panels_figure(df, {"FST: alpha": FST_ALPHA}, "attack", ATTACK, png, pdf)
