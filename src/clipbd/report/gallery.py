"""Galleries: clean vs triggered test images per attack (RVPT Fig. 9 analogue) and the
benign perturbations used for perturbation resistivity (RVPT Fig. 6 analogue)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from clipbd.artifacts import atomic_path  # noqa: E402
from clipbd.data.store import ImageSet, to_float  # noqa: E402


def benign_perturbations(x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """RVPT App. B: Gaussian noise (sigma 0.001), blur (kernel 3, variance 5), colour jitter
    (brightness 0.5, hue 0.3), horizontal flip. x: float [N,3,H,W] in [0,1]."""
    from clipbd._compat import import_torchvision

    tv = import_torchvision()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    jitter = tv.transforms.ColorJitter(brightness=0.5, hue=0.3)
    return {
        "Gaussian noise": (x + 0.001 * torch.randn(x.shape, generator=g)).clamp(0, 1),
        "Gaussian blur": tv.transforms.functional.gaussian_blur(x, [3, 3], [5 ** 0.5] * 2),
        "colour jitter": torch.stack([jitter(img) for img in x]),
        "horizontal flip": x.flip(-1),
    }


def _save(fig, png: str, pdf: str) -> None:
    for path in (png, pdf):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.rsplit(".", 1)[1], dpi=200, bbox_inches="tight")
    plt.close(fig)


def _show(ax, img: torch.Tensor, title: str) -> None:
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def triggers(test: ImageSet, triggered: dict[str, ImageSet], png: str, pdf: str, n: int = 3) -> None:
    """Rows: the clean image, then each attack's triggered copy and its residual (x10)."""
    names = sorted(triggered)
    idx = list(range(n))
    clean = to_float(test.images[idx])
    fig, axes = plt.subplots(n, 1 + 2 * len(names), figsize=(1.1 * (1 + 2 * len(names)), 1.2 * n),
                             squeeze=False)
    for r, i in enumerate(idx):
        _show(axes[r, 0], clean[r], f"clean: {test.classes[test.labels[i]]}" if r == 0 else "")
        for c, name in enumerate(names):
            trig = to_float(triggered[name].images[[i]])[0]
            _show(axes[r, 1 + 2 * c], trig, name if r == 0 else "")
            _show(axes[r, 2 + 2 * c], ((trig - clean[r]) * 10 + 0.5), "residual x10" if r == 0 else "")
    _save(fig, png, pdf)


def perturbations(test: ImageSet, png: str, pdf: str, seed: int, n: int = 3) -> None:
    clean = to_float(test.images[:n])
    variants = {"clean": clean, **benign_perturbations(clean, seed)}
    fig, axes = plt.subplots(n, len(variants), figsize=(1.1 * len(variants), 1.2 * n), squeeze=False)
    for c, (name, imgs) in enumerate(variants.items()):
        for r in range(n):
            _show(axes[r, c], imgs[r], name if r == 0 else "")
    _save(fig, png, pdf)
