"""The papers' tables as data (one function per table).

Which tables, and the numbers they target: docs/methods.md, "Reproduction targets".

Every spec is a function of the tidy frame (metrics.csv, or the grid's planned rows): the
dataset(s) and shot count come from it. Conventions: the main tables use default variants,
the defenses' shot count `main_shots` (16 when the grid has it, else its largest) and the
no-defense rows (shots 0); several seeds give mean ± std.
"""
from __future__ import annotations

import pandas as pd

from clipbd import attacks, defenses
from clipbd.report.tables import ANY, MISSING, TableSpec, build, select


def titles(registry) -> dict[str, str]:
    """name -> title of every registered method, in the tables' order (the classes' facts)."""
    return {name: cls.title or name for name, cls in registry.classes().items()}


ATTACK = titles(attacks.REGISTRY)
DEFENSE = titles(defenses.REGISTRY)
DEFAULT = {"attack_variant": "default", "defense_variant": "default"}


def main_shots(df: pd.DataFrame) -> int:
    shots = sorted(int(s) for s in df["shots"].unique() if s > 0)
    return 16 if 16 in shots or not shots else shots[-1]


def primary(df: pd.DataFrame) -> str:
    return str(df["dataset"].iloc[0]) if len(df) else ""


def _base(df: pd.DataFrame, **extra) -> dict:
    return {**DEFAULT, "shots": (0, main_shots(df)), **extra}


def _attacks(df: pd.DataFrame, wanted: tuple[str, ...] | None = None) -> list[str]:
    present = [a for a in ATTACK if a in set(df["attack"])]
    return [a for a in (wanted or present) if a in present] if wanted else present


def _defense_rows(names) -> list[tuple[str, dict]]:
    return [(DEFENSE.get(d, d), {"defense": d}) for d in names]


def rvpt_table1(df):
    attacks = ("badnet", "blended", "ssba", "wanet", "trojvqa", "badclip")
    return TableSpec("table1", f"RVPT Table 1: ASR (CA) in %, {primary(df)}",
                     _defense_rows(("none", "cleanclip", "linear_probe", "rvpt")),
                     [(("", ATTACK[a]), {"attack": a}) for a in attacks],
                     _base(df, dataset=primary(df)))


def rvpt_table2(df):
    datasets = list(dict.fromkeys(df["dataset"]))
    cols = [((d, ATTACK[a]), {"dataset": d, "attack": a}) for d in datasets
            for a in ("badnet", "blended", "wanet")]
    return TableSpec("table2", "RVPT Table 2: ASR (CA) in % per dataset",
                     _defense_rows(("none", "cleanclip", "linear_probe", "rvpt")), cols, _base(df))


def rvpt_table3(df):
    rows = [("Clean model", {"attack": "clean", "defense": "none"}),
            ("Backdoored", {"defense": "none"}),
            *_defense_rows(("cleanclip", "linear_probe", "rvpt"))]
    return TableSpec("table3", f"RVPT Table 3: poisoned accuracy (PA) in %, {primary(df)}",
                     rows, [(("", ATTACK[a]), {"attack": (a, "clean")})
                            for a in ("badnet", "blended", "badclip")],
                     _base(df, dataset=primary(df)), metric="pa", corner="model")


def rvpt_table4(df):
    datasets = list(dict.fromkeys(df["dataset"]))
    cols = []
    for d in datasets:
        cols += [((d, "woTC"), {"dataset": d, "without_target_class": True,
                                "defense_variant": ANY}),
                 ((d, "default"), {"dataset": d, "defense_variant": "default"})]
    base = {"attack_variant": "default", "shots": main_shots(df), "defense": "rvpt"}
    return TableSpec("table4", "RVPT Table 4: RVPT tuned without the target class (woTC) vs "
                     "default, ASR (CA) in %",
                     [(ATTACK[a], {"attack": a}) for a in ("badnet", "blended", "wanet")], cols,
                     base, corner="attack")


def _transfer_cols(df, attacks):
    return [((d, ATTACK[a]), {"dataset": d, "attack": a})
            for d in dict.fromkeys(df["dataset"]) for a in attacks]


def rvpt_table5(df):
    rows = [("CleanCLIP", {"defense": "cleanclip", "defense_variant": "default"}),
            ("RVPT*", {"defense": "rvpt", "tune_dataset": ANY, "defense_variant": ANY})]
    return TableSpec("table5", "RVPT Table 5: RVPT* tuned on another dataset, ASR (CA) in %",
                     rows, _transfer_cols(df, ("badnet", "blended", "wanet")),
                     {"attack_variant": "default", "shots": (0, main_shots(df))})


def rvpt_table6(df):
    rows = []
    for d in dict.fromkeys(df["dataset"]):
        rows += [(f"{d}: No defense", {"dataset": d, "defense": "none"}),
                 (f"{d}: CleanCLIP", {"dataset": d, "defense": "cleanclip",
                                      "defense_variant": "default"}),
                 (f"{d}: RVPT", {"dataset": d, "defense": "rvpt", "tune_dataset": ANY,
                                 "defense_variant": ANY})]
    return TableSpec("table6", "RVPT Table 6: cross-domain (RVPT tuned on another dataset), "
                     "ASR (CA) in %", rows,
                     [(("", ATTACK[a]), {"attack": a}) for a in ("badnet", "blended", "badclip")],
                     {"attack_variant": "default", "shots": (0, main_shots(df))},
                     corner="test set: method")


def rvpt_table8(df):
    attack = "badclip" if "badclip" in set(df["attack"]) else (_attacks(df) or ["badclip"])[0]
    rows = [("Few-shot VPT (CE)", {"defense": ("vpt", "rvpt")}),
            ("Full fine-tuning (CE)", {"defense": ("ft",)}),
            ("CLIP fine-tuning (InfoNCE, CleanCLIP)", {"defense": ("cleanclip",)})]
    cols = [((ATTACK.get(attack, attack), "without FR"), {"defense": ("vpt", "ft", "cleanclip")}),
            ((ATTACK.get(attack, attack), "with FR"), {"defense": ("rvpt",)})]
    return TableSpec("table8", f"RVPT Table 8: fine-tuning without / with the FR loss, ASR (CA) "
                     f"in %, {primary(df)}", rows, cols,
                     _base(df, dataset=primary(df), attack=attack), corner="tuning")


def cbpt_main(df):
    attacks = _attacks(df)
    defenses = [d for d in DEFENSE if d in set(df["defense"])]
    return TableSpec("main", f"CBPT main table: ASR (CA) in %, {primary(df)}, "
                     f"{main_shots(df)} shots, average over the attacks",
                     _defense_rows(defenses), [(("", ATTACK[a]), {"attack": a}) for a in attacks],
                     _base(df, dataset=primary(df)), average=True)


# Paper, item name -> (spec function, the row that must be in the grid, the paper's reference).
TABLES = {
    ("rvpt", "table1"): (rvpt_table1, {"defense": "rvpt"}, "RVPT Table 1"),
    ("rvpt", "table2"): (rvpt_table2, {"defense": "rvpt", "attack": ("badnet", "blended", "wanet")},
                         "RVPT Table 2"),
    ("rvpt", "table3"): (rvpt_table3, {"defense": "rvpt"}, "RVPT Table 3"),
    ("rvpt", "table4"): (rvpt_table4, {"defense": "rvpt", "without_target_class": True},
                         "RVPT Table 4"),
    ("rvpt", "table5"): (rvpt_table5, {"defense": "rvpt", "tune_dataset": ANY}, "RVPT Table 5"),
    ("rvpt", "table6"): (rvpt_table6, {"defense": "rvpt", "tune_dataset": ANY}, "RVPT Table 6"),
    ("rvpt", "table8"): (rvpt_table8, {"defense": ("vpt", "rvpt")}, "RVPT Table 8"),
    ("cbpt", "main"): (cbpt_main, {"defense": "cbpt"}, "CBPT main table"),
}

# Tables no single study's grid can vary: the reason, and what a user runs instead.
NOT_GRID = {
    "RVPT Table 10": "the hand-crafted prompt is a dataset setting (`datasets.<name>.templates`), "
                     "not a grid axis: run one study per template set (--configfile) and compare "
                     "their tables",
    "RVPT Table 11": "the architecture (`model.arch`, `model.weights`) is one per study: run one "
                     "study per backbone and compare their tables",
}


def table_reason(key: tuple[str, str], df: pd.DataFrame) -> str | None:
    """None when the grid covers the table, else why it is skipped."""
    fn, needs, ref = TABLES[key]
    if df.empty or select(df, needs).empty:
        wanted = ", ".join(f"{k}={v}" for k, v in needs.items())
        return f"the grid has no run with {wanted}"
    t = build(fn(df), df)
    if (t.values == MISSING).all():
        return "every cell is absent from the grid"
    return None
