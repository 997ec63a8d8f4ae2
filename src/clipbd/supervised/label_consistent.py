"""Label-consistent backdoor (Turner et al.; BackdoorBench `lc`).

Method notes: docs/methods.md, "Supervised track: label-consistent poisoning".

Clean-label: only target-class training images are poisoned and keep their label. Each is
first made hard to classify by an L_inf PGD perturbation (eps, steps) against a surrogate
classifier, then a 3x3 checkerboard is pasted into all four corners (`reduced_amplitude` 1
= full contrast). BackdoorBench loads pre-generated adversarial images from an adversarially
trained model; here the surrogate is a small CNN trained for `surrogate_epochs` on the
victim's clean training subset inside the poisoning step (seeded). At test time only the
checkerboard is applied.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipbd.attacks.base import Attack
from clipbd.data.store import ImageSet, to_float, to_uint8


def checkerboard(size: int = 3) -> torch.Tensor:
    i = torch.arange(size)
    return ((i.view(-1, 1) + i.view(1, -1)) % 2 == 0).float()  # 1 at the corners of the tile


class LabelConsistent(Attack):
    name = "lc"

    def make_trigger(self, seed: int) -> dict[str, torch.Tensor]:
        return {"pattern": checkerboard(self.cfg["patch_size"]).expand(3, -1, -1).clone()}

    def apply(self, x, trigger, gen):
        p, s = self.cfg["patch_size"], self.image_size
        amp = self.cfg["reduced_amplitude"]
        out = x.clone()
        pat = trigger["pattern"].to(x)
        for r, c in ((0, 0), (0, s - p), (s - p, 0), (s - p, s - p)):
            tile = out[:, :, r:r + p, c:c + p]
            out[:, :, r:r + p, c:c + p] = tile + amp * (pat - tile)
        return out.clamp(0, 1)

    def pre_poison(self, data: ImageSet, idx: torch.Tensor, seed: int) -> torch.Tensor:
        """uint8 images of `data[idx]` after PGD against a surrogate trained on `data`."""
        c = self.cfg
        if not len(idx) or c["eps"] <= 0:
            return data.images[idx]
        net = surrogate(data, len(data.classes), c["surrogate_epochs"], seed)
        x = to_float(data.images[idx])
        return to_uint8(pgd(net, x, data.labels[idx], c["eps"], c["pgd_steps"]))


def _small_cnn(n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(64 * 16, n_classes))


@torch.enable_grad()
def surrogate(data: ImageSet, n_classes: int, epochs: int, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _small_cnn(n_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for b in torch.randperm(len(data), generator=g).split(128):
            loss = F.cross_entropy(net(to_float(data.images[b])), data.labels[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.enable_grad()
def pgd(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """Untargeted L_inf PGD (step 2.5 * eps / steps) maximizing CE of the true label."""
    step = 2.5 * eps / max(steps, 1)
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(net(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = (adv + step * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    return adv.detach()
