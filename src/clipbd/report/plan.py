"""Which paper tables and figures a grid covers, and how each is built.

`plan(runs)` runs when Snakemake parses the workflow (from the grid's planned rows); `make`
runs in the job (from metrics.csv and the probe dumps). Both decide coverage with the same
functions on frames with the same columns, so the planned outputs are exactly what is built.
Every item not covered is listed with its reason (and the grid block that would add it) in
results/paper/captions.md and in the job log.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import pandas as pd

from clipbd import paths
from clipbd.grid import DEFAULT, Run
from clipbd.report import compute, curves, paper, probe_figures, tables

log = logging.getLogger(__name__)

_CAPTIONS = {
    "rvpt/table1": "RVPT Table 1: ASR (CA) in % of each attack under no defense, CleanCLIP, "
                   "a linear probe and RVPT, on the first dataset of the grid.",
    "rvpt/table2": "RVPT Table 2: BadNet, Blended and WaNet on every dataset of the grid.",
    "rvpt/table3": "RVPT Table 3: poisoned accuracy (triggered images vs their true labels).",
    "rvpt/table4": "RVPT Table 4: RVPT tuned without the target class (woTC) vs default.",
    "rvpt/table5": "RVPT Table 5: RVPT* tuned on another dataset than the one evaluated, "
                   "vs CleanCLIP.",
    "rvpt/table6": "RVPT Table 6: cross-domain evaluation of RVPT tuned on another dataset.",
    "rvpt/table8": "RVPT Table 8: few-shot prompt tuning, full fine-tuning and CleanCLIP, "
                   "without / with the feature-repelling (FR) loss.",
    "rvpt/table9": "RVPT Table 9: compute per defense: wall time of the tuning job, trainable "
                   "parameters it stores, tuning samples (peak memory is not recorded).",
    "cbpt/main": "CBPT main table: attacks x defenses, ASR (CA) in %, with the average over "
                 "the attacks (CBPT reports CA 58.86, ASR 0.39 on CLIP).",
    "rvpt/fig1": "RVPT Fig. 1: perturbation resistivity (cosine similarity of the CLS token "
                 "of clean vs perturbed images) per layer; panels: backdoored, + VPT, + RVPT, "
                 "and the model pre-trained on clean data only.",
    "rvpt/fig3": "RVPT Fig. 3: ablations of RVPT (shots, alpha, context length, depth from "
                 "the output / input, margin); solid ASR, dashed CA.",
    "rvpt/fig4": "RVPT Fig. 4: last-layer attention of the CLS token on clean and triggered "
                 "images, backdoored model vs RVPT.",
    "rvpt/fig5": "RVPT Fig. 5: t-SNE of image features, clean (dots) vs triggered (stars), "
                 "colour = true class; backdoored, VPT, RVPT.",
    "cbpt/shots": "CBPT: ASR and CA against the number of shots per class, per defense, "
                  "mean over the attacks.",
    "fst/alpha": "FST: sensitivity to alpha (weight of the <W, W_ori> term), per attack.",
}


@dataclass(frozen=True)
class Inputs:
    """What an item's job reads: the tidy table, the probe dumps (label -> file), the deltas."""
    df: pd.DataFrame | None = None
    probes: dict[str, str] = field(default_factory=dict)
    deltas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Item:
    """One paper table (results/paper/<name>.csv/.md/.tex) or figure (.png/.pdf)."""
    name: str  # "<paper>/<item>"
    caption: str
    figure: bool
    reads: str  # what its job reads: "metrics" (metrics.csv), "deltas" (and their sidecars), "probes"
    build: Callable[[Inputs, list[str]], object]  # (inputs, output files) -> writes them
    probed: tuple[str, ...] = ()  # probe figures: the panels that must be in the grid
    probed_any: tuple[str, ...] = ()  # ... and at least one of these

    def outputs(self, prefix: str) -> list[str]:
        return [f"{prefix}.{ext}" for ext in (("png", "pdf") if self.figure else ("csv", "md", "tex"))]


def _table(spec_fn, ins: Inputs, outs: list[str]):
    return tables.write(spec_fn(ins.df), ins.df, *outs)


def _curve(fn, ins: Inputs, outs: list[str]):
    return fn(ins.df, *outs)


def _probed(fn, ins: Inputs, outs: list[str]):
    return fn(ins.probes, *outs)


CURVES = {"rvpt/fig3": (curves.rvpt_fig3, curves.FIG3),
          "cbpt/shots": (curves.cbpt_shots, {"shots": curves.CBPT_SHOTS}),
          "fst/alpha": (curves.fst_alpha, {"alpha": curves.FST_ALPHA})}
ITEMS = {item.name: item for item in [
    *(Item("/".join(key), _CAPTIONS["/".join(key)], False, "metrics", partial(_table, spec[0]))
      for key, spec in paper.TABLES.items()),
    Item("rvpt/table9", _CAPTIONS["rvpt/table9"], False, "deltas",
         lambda ins, outs: compute.write(list(ins.deltas), *outs)),
    *(Item(name, _CAPTIONS[name], True, "metrics", partial(_curve, fn))
      for name, (fn, _) in CURVES.items()),
    Item("rvpt/fig1", _CAPTIONS["rvpt/fig1"], True, "probes", partial(_probed, probe_figures.fig1),
         probed=("backdoored",)),
    Item("rvpt/fig4", _CAPTIONS["rvpt/fig4"], True, "probes", partial(_probed, probe_figures.fig4),
         probed=("backdoored", "RVPT")),
    Item("rvpt/fig5", _CAPTIONS["rvpt/fig5"], True, "probes", partial(_probed, probe_figures.fig5),
         probed=("backdoored",), probed_any=("VPT", "RVPT")),
]}
PROBE_FIGURES = [name for name, item in ITEMS.items() if item.reads == "probes"]


@dataclass
class Plan:
    tables: list[str] = field(default_factory=list)  # "paper/item"
    figures: list[str] = field(default_factory=list)
    probes: dict[str, Run] = field(default_factory=dict)  # panel label -> run probed
    trigger: str = ""  # the probe attack's poisoned test set (for the clean-trained model)
    deltas: list[str] = field(default_factory=list)  # what RVPT Table 9 reads
    skipped: dict[str, str] = field(default_factory=dict)  # reference -> reason


def frame(runs: list[Run]) -> pd.DataFrame:
    """The grid's planned rows, with the columns metrics.csv will have (placeholder values)."""
    rows = [r.row(ca=0.5, asr=None if r.attack == "clean" else 0.5,
                  pa=None if r.attack == "clean" else 0.5) for r in runs]
    return pd.DataFrame(rows)


def probe_runs(runs: list[Run]) -> tuple[dict[str, Run], str]:
    """The models probed for Figs. 1, 4, 5: on the first dataset, BadCLIP if the grid has it
    (the papers' choice) else its first attack; default variants, main shot count, the
    first seed (its backdoored model and triggered test set)."""
    df = frame(runs)
    if df.empty:
        return {}, ""
    dataset = paper.primary(df)
    attacks = [a for a in paper.ATTACK if a in set(df[df.dataset == dataset].attack)]
    if not attacks:
        return {}, ""
    attack = "badclip" if "badclip" in attacks else attacks[0]
    shots = paper.main_shots(df)
    by_key = {r.key: r for r in runs}
    seeds = sorted(int(s) for s in df.seed.unique())
    clean = sorted(r.seed for r in runs  # at the global seed
                   if (r.dataset, r.attack, r.attack_variant, r.defense, r.defense_variant)
                   == (dataset, "clean", DEFAULT, "none", DEFAULT))
    wanted = {"backdoored": Run(dataset, attack, DEFAULT, "none", DEFAULT, 0, seeds[0]),
              "clean-trained": Run(dataset, "clean", DEFAULT, "none", DEFAULT, 0,
                                   (clean or seeds)[0])}
    for label, defense in (("VPT", "vpt"), ("RVPT", "rvpt")):
        for s in seeds:
            wanted.setdefault(label, Run(dataset, attack, DEFAULT, defense, DEFAULT, shots, s))
            if Run(dataset, attack, DEFAULT, defense, DEFAULT, shots, s).key in by_key:
                wanted[label] = Run(dataset, attack, DEFAULT, defense, DEFAULT, shots, s)
                break
    chosen = {k: r for k, r in wanted.items() if r.key in by_key}
    return chosen, paths.fill(paths.POISONED, dataset=dataset, attack=attack, attack_variant=DEFAULT,
                              seed=seeds[0], split="test")


def plan(runs: list[Run]) -> Plan:
    df = frame(runs)
    out = Plan()
    for key in paper.TABLES:
        reason = paper.table_reason(key, df) if not df.empty else "the grid is empty"
        name = "/".join(key)
        (out.skipped.__setitem__(paper.TABLES[key][2], reason) if reason
         else out.tables.append(name))
    out.skipped.update(paper.NOT_GRID)
    if not df.empty:
        out.deltas = compute.deltas_of(runs, paper.primary(df), paper.main_shots(df))
    for name in (n for n, item in ITEMS.items() if item.reads == "deltas"):
        if out.deltas:
            out.tables.append(name)
        else:
            out.skipped["RVPT Table 9"] = "the grid has no defense that tunes"
    for name, (_, panels) in CURVES.items():
        reasons = curves.panel_reasons(df, panels) if not df.empty else {"all": "empty grid"}
        if len(reasons) == len(panels):
            out.skipped[name] = "; ".join(f"{p}: {r}" for p, r in reasons.items())
        else:
            out.figures.append(name)
            out.skipped.update({f"{name} panel {p}": r for p, r in reasons.items()})
    probes, out.trigger = probe_runs(runs)
    for name in PROBE_FIGURES:
        item = ITEMS[name]
        missing = [n for n in item.probed if n not in probes]
        if missing:
            out.skipped[name] = f"the grid lacks the model(s) probed: {', '.join(missing)}"
        elif item.probed_any and not set(item.probed_any) & set(probes):
            out.skipped[name] = f"the grid has none of {', '.join(item.probed_any)}"
        else:
            out.figures.append(name)
    out.probes = probes if any(f in PROBE_FIGURES for f in out.figures) else {}
    for ref, reason in out.skipped.items():
        log.info("skipped %s: %s", ref, reason)
    return out


def make(item: str, df: pd.DataFrame | None, prefix: str, probes: dict[str, str],
         deltas: list[str] = ()) -> list[str]:
    """Build one planned item (ITEMS) from what its job read; returns the files written."""
    if item not in ITEMS:
        raise ValueError(f"unknown paper item {item!r}; known: {sorted(ITEMS)}")
    outs = ITEMS[item].outputs(prefix)
    ITEMS[item].build(Inputs(df, dict(probes), tuple(deltas)), outs)
    return outs


def captions(tables_: list[str], figures: list[str], skipped: dict[str, str],
             galleries: list[str]) -> str:
    lines = ["# Paper tables and figures of this study", "",
             "Each file under results/paper/ and the figure of the paper it reproduces.", ""]
    for item in tables_:
        lines.append(f"- `{item}.{{csv,md,tex}}`: {ITEMS[item].caption}")
    for item in figures:
        lines.append(f"- `{item}.{{png,pdf}}`: {ITEMS[item].caption}")
    for g in galleries:
        kind = ("RVPT Fig. 9: clean vs triggered images per attack (residual x10)"
                if "triggers" in g else "RVPT Fig. 6: the benign perturbations")
        lines.append(f"- `{g}`: {kind}.")
    lines += ["", "## Not in this grid", ""]
    lines += [f"- {ref}: {reason}" for ref, reason in sorted(skipped.items())]
    return "\n".join(lines) + "\n"
