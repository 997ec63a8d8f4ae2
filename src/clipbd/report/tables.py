"""Paper tables as data: a `TableSpec` (rows, columns, filters, metric) rendered by one renderer
to CSV, Markdown and LaTeX (booktabs).

A cell selects the metrics rows matching `base`, its row filter and its column filter (a filter
maps a column to a value, or to a tuple of accepted values). Its text is "ASR (CA)" in percent
(or one metric), the mean over the selected rows (the seeds). Over several rows it is
"mean ± std, n=N", std being the sample standard deviation (ddof=1) and N the runs behind the
cell; a single row renders as its value alone. No matching row gives "—" and never an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from clipbd.artifacts import atomic_path

MISSING = "—"
ANY = "*"  # a filter value: any non-empty value
Filter = dict


@dataclass
class TableSpec:
    name: str
    title: str
    rows: list[tuple[str, Filter]]
    cols: list[tuple[tuple[str, str], Filter]]  # ((group or "", label), filter)
    base: Filter = field(default_factory=dict)
    metric: str = "asr_ca"  # "asr_ca" = ASR (CA), else one metrics column, e.g. "pa"
    average: bool = False  # add a column: the mean over the columns (all present, else "—")
    corner: str = "method"


def _norm(v):
    """Compare CSV-read and planned values alike: booleans, numbers, strings."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower()
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def normalized(df: pd.DataFrame) -> list[dict]:
    """The rows as dicts of normalized values (select many times on one frame with it)."""
    return [{k: _norm(v) for k, v in rec.items()} for rec in df.to_dict("records")]


def _na(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _match(rec: dict, flt: Filter) -> bool:
    for col, want in flt.items():
        values = want if isinstance(want, tuple) else (want,)
        if col not in rec:
            if None in values:
                continue
            return False
        v = rec[col]
        if want == ANY:
            if _na(v):
                return False
        elif not any(_na(v) if w is None else (not _na(v) and v == _norm(w)) for w in values):
            return False
    return True


def select(df: pd.DataFrame, *filters: Filter, normed: list[dict] | None = None) -> pd.DataFrame:
    """Rows matching every filter (a column absent from df matches only None)."""
    records = normalized(df) if normed is None else normed
    return df.iloc[[i for i, rec in enumerate(records) if all(_match(rec, f) for f in filters)]]


STD_NOTE = "Mean ± sample std (ddof=1) over n seeds."  # appended to titles with n > 1


def number(values: pd.Series) -> str:
    """Percent with two decimals; mean ± sample std (ddof=1) over several values."""
    values = values.dropna()
    if values.empty:
        return MISSING
    mean = f"{100 * values.mean():.2f}"
    return mean if len(values) == 1 else f"{mean} ± {100 * values.std(ddof=1):.2f}"


def _names(metric: str) -> list[str]:
    return ["asr", "ca"] if metric == "asr_ca" else [metric]


def count(part: pd.DataFrame, metric: str) -> int:
    """The runs behind a cell: selected rows with a value of the cell's metric(s)."""
    names = [m for m in _names(metric) if m in part]
    return int(part[names].notna().any(axis=1).sum()) if names else 0


def _with_n(text: str, n: int) -> str:
    return text if n <= 1 or text == MISSING else f"{text}, n={n}"


def cell(part: pd.DataFrame, metric: str) -> str:
    if part.empty:
        return MISSING
    if metric == "asr_ca":
        asr, ca = number(part["asr"]), number(part["ca"])
        text = MISSING if asr == ca == MISSING else f"{asr} ({ca})"
    else:
        text = number(part[metric]) if metric in part else MISSING
    return _with_n(text, count(part, metric))


def build(spec: TableSpec, df: pd.DataFrame) -> pd.DataFrame:
    """The rendered cells: index = row labels, columns = column labels (tuples)."""
    body, normed = {}, normalized(df)
    for label, rf in spec.rows:
        parts = [select(df, spec.base, rf, cf, normed=normed) for _, cf in spec.cols]
        body[label] = [cell(p, spec.metric) for p in parts]
        if spec.average:
            body[label].append(_average(parts, spec.metric))
    cols = [c for c, _ in spec.cols] + ([("", "average")] if spec.average else [])
    out = pd.DataFrame.from_dict(body, orient="index", columns=pd.MultiIndex.from_tuples(cols))
    out.index.name = spec.corner
    return out


def _per_seed(parts: list[pd.DataFrame], names: list[str]) -> dict[str, pd.Series] | None:
    """metric -> the average over the columns of each seed, when every column holds the same
    seeds once each; else None."""
    seeds = [tuple(sorted(p["seed"])) if "seed" in p else None for p in parts]
    if seeds[0] is None or len(set(seeds)) != 1 or len(set(seeds[0])) != len(seeds[0]):
        return None
    out = {m: pd.concat([p.set_index("seed")[m] for p in parts], axis=1) for m in names}
    return None if any(f.isna().any().any() for f in out.values()) else {
        m: f.mean(axis=1) for m, f in out.items()}


def _average(parts: list[pd.DataFrame], metric: str) -> str:
    """The mean over columns of each column's mean (over seeds); "—" if a column is absent.
    When every column holds the same n > 1 seeds: mean ± sample std over the seeds of each
    seed's average over the columns (the same mean), and n."""
    names = _names(metric)
    means = {m: [p[m].mean() if m in p else float("nan") for p in parts] for m in names}
    if not parts or any(pd.isna(v) for vals in means.values() for v in vals):
        return MISSING
    text = [f"{100 * sum(v) / len(v):.2f}" for v in means.values()]
    seeds = _per_seed(parts, names)
    n = len(next(iter(seeds.values()))) if seeds else 1
    if n > 1:
        text = [number(seeds[m]) for m in names]
    return _with_n(f"{text[0]} ({text[1]})" if metric == "asr_ca" else text[0], n)


def _flat(col: tuple[str, str]) -> str:
    return f"{col[0]} {col[1]}".strip()


def to_csv(t: pd.DataFrame) -> str:
    flat = t.copy()
    flat.columns = [_flat(c) for c in t.columns]
    return flat.to_csv()


def to_markdown(t: pd.DataFrame, title: str) -> str:
    head = [t.index.name, *(_flat(c) for c in t.columns)]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([str(i), *row]) + " |" for i, row in zip(t.index, t.values)]
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    s = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("$", r"\$"), ("~", r"\textasciitilde{}")):
        s = s.replace(a, b)
    return s.replace("±", r"$\pm$").replace(MISSING, "---")


def to_latex(t: pd.DataFrame, title: str) -> str:
    n = len(t.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(title)}}}",
             r"\begin{tabular}{l" + "c" * n + "}", r"\toprule"]
    groups = [c[0] for c in t.columns]
    if any(groups):
        spans, rules, start = [], [], 0
        for i in range(1, n + 1):
            if i == n or groups[i] != groups[start]:
                width = i - start
                spans.append(rf"\multicolumn{{{width}}}{{c}}{{{_tex(groups[start])}}}")
                if groups[start]:
                    rules.append(rf"\cmidrule(lr){{{start + 2}-{i + 1}}}")
                start = i
        lines += [" & ".join(["", *spans]) + r" \\", " ".join(rules)]
    lines.append(" & ".join([_tex(t.index.name), *(_tex(c[1]) for c in t.columns)]) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(_tex(x) for x in [i, *row]) + r" \\" for i, row in zip(t.index, t.values)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def seeds_note(df: pd.DataFrame) -> str | None:
    """A figure's note on its error bars when its runs span several seeds, else None."""
    n = df["seed"].nunique() if "seed" in df and len(df) else 1
    return f"mean ± sample std (ddof=1) over n={n} seeds" if n > 1 else None


def title(spec: TableSpec, t: pd.DataFrame) -> str:
    """The spec's title; with STD_NOTE when a cell aggregates several runs."""
    several = any(", n=" in str(v) for v in t.values.ravel())
    return f"{spec.title}. {STD_NOTE}" if several else spec.title


def write(spec: TableSpec, df: pd.DataFrame, csv: str, md: str, tex: str) -> pd.DataFrame:
    t = build(spec, df)
    head = title(spec, t)
    for path, text in ((csv, to_csv(t)), (md, to_markdown(t, head)),
                       (tex, to_latex(t, head))):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return t
