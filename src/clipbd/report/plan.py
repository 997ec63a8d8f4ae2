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

import pandas as pd

from clipbd.grid import DEFAULT, Run, decode_variant
from clipbd.report import compute, curves, paper, probe_figures, tables

log = logging.getLogger(__name__)

CAPTIONS = {
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
PROBE_FIGURES = {"rvpt/fig1": ("backdoored",), "rvpt/fig4": ("backdoored", "RVPT"),
                 "rvpt/fig5": ("backdoored",)}
CURVES = {"rvpt/fig3": (curves.rvpt_fig3, curves.FIG3),
          "cbpt/shots": (curves.cbpt_shots, {"shots": curves.CBPT_SHOTS}),
          "fst/alpha": (curves.fst_alpha, {"alpha": curves.FST_ALPHA})}


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
    rows = [{"dataset": r.dataset, "attack": r.attack, "defense": r.defense, "shots": r.shots,
             "seed": r.seed, "attack_variant": r.attack_variant, "defense_variant": r.defense_variant,
             "ca": 0.5, "asr": None if r.attack == "clean" else 0.5,
             "pa": None if r.attack == "clean" else 0.5,
             **decode_variant(r.attack_variant), **decode_variant(r.defense_variant)} for r in runs]
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
    return chosen, f"results/poisoned/{dataset}/{attack}/{DEFAULT}/seed~{seeds[0]}/test.safetensors"


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
    if out.deltas:
        out.tables.append("rvpt/table9")
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
    for name, needs in PROBE_FIGURES.items():
        missing = [n for n in needs if n not in probes]
        if missing or (name == "rvpt/fig5" and not {"VPT", "RVPT"} & set(probes)):
            out.skipped[name] = (f"the grid lacks the model(s) probed: {', '.join(missing)}"
                                 if missing else "the grid has neither VPT nor RVPT")
        else:
            out.figures.append(name)
    out.probes = probes if any(f in PROBE_FIGURES for f in out.figures) else {}
    for ref, reason in out.skipped.items():
        log.info("skipped %s: %s", ref, reason)
    return out


def make(item: str, df: pd.DataFrame, prefix: str, probes: dict[str, str],
         deltas: list[str] = ()) -> list[str]:
    """Build one planned item: a table (prefix.csv/.md/.tex) or a figure (prefix.png/.pdf);
    returns the files written. `probes`: Figs. 1, 4, 5; `deltas`: Table 9."""
    key = tuple(item.split("/"))
    if item == "rvpt/table9":
        return compute.write(list(deltas), *(f"{prefix}.{ext}" for ext in ("csv", "md", "tex")))
    if key in paper.TABLES:
        outs = [f"{prefix}.{ext}" for ext in ("csv", "md", "tex")]
        tables.write(paper.TABLES[key][0](df), df, *outs)
        return outs
    outs = [f"{prefix}.png", f"{prefix}.pdf"]
    if item in CURVES:
        CURVES[item][0](df, *outs)
        return outs
    if item in PROBE_FIGURES:
        fn = {"rvpt/fig1": probe_figures.fig1, "rvpt/fig4": probe_figures.fig4,
              "rvpt/fig5": probe_figures.fig5}[item]
        fn(probes, *outs)
        return outs
    raise ValueError(f"unknown paper item {item!r}; known: "
                     f"{sorted(CAPTIONS)}")


def captions(tables_: list[str], figures: list[str], skipped: dict[str, str],
             galleries: list[str]) -> str:
    lines = ["# Paper tables and figures of this study", "",
             "Each file under results/paper/ and the figure of the paper it reproduces.", ""]
    for item in tables_:
        lines.append(f"- `{item}.{{csv,md,tex}}`: {CAPTIONS[item]}")
    for item in figures:
        lines.append(f"- `{item}.{{png,pdf}}`: {CAPTIONS[item]}")
    for g in galleries:
        kind = ("RVPT Fig. 9: clean vs triggered images per attack (residual x10)"
                if "triggers" in g else "RVPT Fig. 6: the benign perturbations")
        lines.append(f"- `{g}`: {kind}.")
    lines += ["", "## Not in this grid", ""]
    lines += [f"- {ref}: {reason}" for ref, reason in sorted(skipped.items())]
    return "\n".join(lines) + "\n"
