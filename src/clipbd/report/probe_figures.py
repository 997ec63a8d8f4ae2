"""Figures from probe dumps (clipbd.report.probe): RVPT Fig. 1 (perturbation resistivity per
layer), Fig. 4 (last-layer attention, clean vs triggered, backdoored vs RVPT) and Fig. 5
(t-SNE of clean vs triggered features). `probes` maps a panel label to a dump path; labels:
"backdoored", "VPT", "RVPT", "clean-trained" (the model pre-trained on clean data only)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from clipbd.artifacts import load_tensors  # noqa: E402
from clipbd.report.curves import WIDTH, _save  # noqa: E402
from clipbd.report.tsne import tsne  # noqa: E402

PANELS = ("backdoored", "VPT", "RVPT", "clean-trained")
TITLES = {"backdoored": "(a) backdoored", "VPT": "(b) + VPT", "RVPT": "(c) + RVPT",
          "clean-trained": "(d) trained on clean data only"}


def _ordered(probes: dict[str, str]) -> list[str]:
    return [p for p in PANELS if p in probes]


def fig1(probes: dict[str, str], png: str, pdf: str) -> None:
    names = _ordered(probes)
    sns.set_theme(style="whitegrid", context="paper", palette="colorblind")
    cols = 2 if len(names) > 1 else 1
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * WIDTH, 1.9 * rows + 0.4), squeeze=False,
                             sharey=True)
    low, handles = 0.0, {}
    for ax, name in zip(axes.flat, names):
        t, meta = load_tensors(probes[name])
        pr = t["pr"]
        low = min(low, float(pr.min()))
        layers = list(range(1, pr.shape[1] + 1))
        for i, pert in enumerate(meta["perturbations"]):
            (line,) = ax.plot(layers, pr[i].tolist(), marker="o", ms=3, label=pert,
                              color=sns.color_palette("colorblind")[i],
                              ls="--" if pert == "trigger" else "-")
            handles.setdefault(pert, line)
        ax.set(title=TITLES[name], xticks=layers)
        ax.set_xlabel("layer", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("PR (cosine)", fontsize=7)
    axes[0, 0].set_ylim(low - 0.05, 1.05)
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    fig.tight_layout()
    fig.legend(handles.values(), handles.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=3, fontsize=6, frameon=False)
    _save(fig, png, pdf)


def _overlay(ax, img_u8: torch.Tensor, attn: torch.Tensor, title: str) -> None:
    img = img_u8.float() / 255  # uint8 [H, W, 3]
    heat = F.interpolate(attn[None, None].float(), size=img.shape[:2], mode="bilinear",
                         align_corners=False)[0, 0]
    heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-12)
    ax.imshow(img.numpy(), interpolation="nearest")
    ax.imshow(heat.numpy(), cmap="viridis", alpha=0.55, interpolation="bilinear")
    ax.set_title(title, fontsize=6)
    ax.set_axis_off()


def fig4(probes: dict[str, str], png: str, pdf: str, n: int = 3) -> None:
    """Rows: images; columns: clean / triggered image, then each model's attention map."""
    names = [p for p in ("backdoored", "RVPT") if p in probes]
    dumps = {name: load_tensors(probes[name])[0] for name in names}
    first = dumps[names[0]]
    n = min(n, len(first["images_clean"]))
    ncol = 2 + 2 * len(names)
    fig, axes = plt.subplots(n, ncol, figsize=(0.85 * ncol, 0.95 * n), squeeze=False)
    for r in range(n):
        for c, kind in enumerate(("clean", "trig")):
            img = first[f"images_{kind}"][r]
            ax = axes[r, c]
            ax.imshow(img.numpy(), interpolation="nearest")
            ax.set_axis_off()
            if r == 0:
                ax.set_title("clean" if kind == "clean" else "triggered", fontsize=6)
        col = 2
        for name in names:
            for kind in ("clean", "trig"):
                d = dumps[name]
                label = f"{name}\n{'clean' if kind == 'clean' else 'triggered'}" if r == 0 else ""
                _overlay(axes[r, col], d[f"images_{kind}"][r], d[f"attn_{kind}"][r], label)
                col += 1
    fig.tight_layout(pad=0.3)
    _save(fig, png, pdf)


def fig5(probes: dict[str, str], png: str, pdf: str, per_class: int = 20, seed: int = 0) -> None:
    """t-SNE per model of clean (dots) and triggered (stars) features, colour = true class."""
    names = [p for p in ("backdoored", "VPT", "RVPT") if p in probes]
    sns.set_theme(style="white", context="paper")
    fig, axes = plt.subplots(1, len(names), figsize=(WIDTH * len(names) / 1.6, 2.4),
                             squeeze=False)
    palette = sns.color_palette("colorblind", 10)
    for ax, name in zip(axes[0], names):
        t, meta = load_tensors(probes[name])
        labels = t["labels"]
        keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class]
                          for c in labels.unique()])
        feats = torch.cat([t["feat_clean"][keep], t["feat_trig"][keep]])
        y = tsne(feats, seed=seed)
        m = len(keep)
        for i, c in enumerate(labels[keep].unique().tolist()):
            sel = (labels[keep] == c).nonzero().flatten()
            colour = palette[i % len(palette)]
            ax.scatter(y[sel, 0], y[sel, 1], s=6, color=colour, label=meta["classes"][c])
            ax.scatter(y[m + sel, 0], y[m + sel, 1], s=22, marker="*", color=colour,
                       edgecolors="black", linewidths=0.2)
        ax.set(title=TITLES[name], xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
    axes[0, -1].legend(fontsize=5, markerscale=1.5, loc="center left", bbox_to_anchor=(1, 0.5),
                       title="class (dot: clean,\nstar: triggered)", title_fontsize=5)
    fig.tight_layout()
    _save(fig, png, pdf)
