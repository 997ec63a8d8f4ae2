"""Patch triggers: where a square patch goes, pasting it, and optimizing it against a frozen CLIP.

Shared by the optimized-patch attacks (TrojVQA, BadCLIP). The lineage pastes a 16x16 patch
at 224 px (about 7% of the side); at 32 px that is 2-3 px. Locations follow BadNet:
`corner` = one pixel in from the bottom-right corner, `center` = (side - patch) // 2,
`random` = a new top-left per image, drawn from the generator.

`optimize_patch` runs Adam on the patch pixels against the clean CLIP's image encoder, which
stays frozen; each step draws a batch of training images that are not of the target class
(or the attack's own `pool`). The loss is the attack's own. `bound` keeps the patch in [0,1]:
`project` clamps the pixels after every step; `clip` (BadCLIP's repo) pastes clip(patch) and
leaves the free pixels alone, so a pixel past a bound gets no gradient until Adam's momentum
brings it back.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipbd import accel
from clipbd.attacks.base import TriggerContext
from clipbd.data.store import to_float
from clipbd.models.zeroshot import Normalize

LOCATIONS = ("center", "corner", "random")


def positions(where: str, n: int, patch_size: int, image_size: int,
              gen: torch.Generator | None = None) -> torch.Tensor:
    """Top-left (row, col) of the patch for each of n images, int64 [n, 2]."""
    p, s = patch_size, image_size
    if not 1 <= p <= s:
        raise ValueError(f"patch_size={p} does not fit {s}-px images")
    if where == "random":
        return torch.randint(0, s - p + 1, (n, 2), generator=gen)
    if where not in LOCATIONS:
        raise ValueError(f"location must be one of {LOCATIONS}, got {where!r}")
    at = {"corner": max(s - p - 1, 0), "center": (s - p) // 2}[where]
    return torch.full((n, 2), at, dtype=torch.long)


def paste(x: torch.Tensor, patch: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Copy of images x [N,3,H,W] with `patch` [3,p,p] at the top-left corners `pos` [N,2].

    Differentiable in `patch`; pixels outside the patch are copied bit for bit.
    """
    p = patch.shape[-1]
    out = x.clone()
    patch = patch.to(out.dtype)
    if len(pos) and bool((pos == pos[0]).all()):  # one place for all images: one write
        r, c = pos[0].tolist()
        out[:, :, r:r + p, c:c + p] = patch
        return out
    for i, (r, c) in enumerate(pos.tolist()):
        out[i, :, r:r + p, c:c + p] = patch
    return out


def init_patch(kind: str, patch_size: int, gen: torch.Generator) -> torch.Tensor:
    """`normal`: N(0.5, 0.25) clipped to [0,1] (BadCLIP); `uniform`: U[0,1]."""
    shape = (3, patch_size, patch_size)
    if kind == "normal":
        return (0.5 + 0.25 * torch.randn(shape, generator=gen)).clamp(0, 1)
    if kind == "uniform":
        return torch.rand(shape, generator=gen)
    raise ValueError(f"patch init must be 'normal' or 'uniform', got {kind!r}")


class ImagePool:
    """Training images of ctx.corpus, target-class images of the target dataset left out;
    or the given `parts`: (uint8 images [N,H,W,3], indices into them) pairs."""

    def __init__(self, ctx: TriggerContext | None = None, parts=None):
        if parts is None:
            parts = []
            for name, data, _ in ctx.corpus:
                keep = torch.ones(len(data), dtype=torch.bool)
                if name == ctx.target_dataset and ctx.target in data.classes:
                    keep = data.labels != data.classes.index(ctx.target)
                parts.append((data.images, keep.nonzero().flatten()))
        self.parts = list(parts)
        sizes = [len(idx) for _, idx in self.parts]
        self.ends = torch.tensor(sizes, dtype=torch.long).cumsum(0)
        if int(self.ends[-1]) == 0:
            raise ValueError("no non-target training images to optimize the patch on")

    def __len__(self) -> int:
        return int(self.ends[-1])

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """float [n,3,H,W] in [0,1], drawn with replacement."""
        k = torch.randint(0, len(self), (n,), generator=gen)
        part = torch.searchsorted(self.ends, k, right=True)
        starts = torch.cat([torch.zeros(1, dtype=torch.long), self.ends[:-1]])
        out = torch.empty(n, *self.parts[0][0].shape[1:], dtype=torch.uint8)
        for j, (images, idx) in enumerate(self.parts):
            sel = part == j
            if sel.any():
                out[sel] = images[idx[k[sel] - starts[j]]]
        return to_float(out)


@contextmanager
def frozen(model: torch.nn.Module):
    """Eval mode, no parameter gradients; the model's flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def encode_images(model, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Unit image embeddings [N,D] of images in [0,1] (no gradient)."""
    norm, dev = Normalize(model), accel.device_of(model)
    with torch.no_grad():
        return torch.cat([F.normalize(model.encode_image(norm(accel.to(x[i:i + batch], dev))),
                                      dim=-1) for i in range(0, len(x), batch)])


def encode_texts(model, tok, texts: list[str]) -> torch.Tensor:
    """Unit text embeddings [T,D] (no gradient)."""
    with torch.no_grad():
        return F.normalize(model.encode_text(tok(texts).to(accel.device_of(model))), dim=-1)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def optimize_patch(ctx: TriggerContext, loss_fn: LossFn, *, patch_size: int, location: str,
                   steps: int, batch_size: int, lr: float, init: str = "uniform",
                   seed: int | None = None, pool: ImagePool | None = None,
                   bound: str = "project") -> tuple[torch.Tensor, list[float]]:
    """Adam on the patch against the frozen clean CLIP; returns (patch [3,p,p], loss per step).

    loss_fn(patched, clean, gen) gets the unit embeddings [B,D] of the patched images (with
    gradient) and of the same images without the patch (without), and returns a scalar.
    """
    if ctx.model is None:
        raise ValueError("patch optimization needs the clean CLIP (needs_model)")
    if bound not in ("project", "clip"):
        raise ValueError(f"patch bound must be 'project' or 'clip', got {bound!r}")
    model = ctx.model
    gen = torch.Generator().manual_seed(ctx.seed if seed is None else seed)
    pool = ImagePool(ctx) if pool is None else pool
    size, dev = pool.parts[0][0].shape[1], accel.device_of(model)  # the model's device (place)
    patch = init_patch(init, patch_size, gen).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=lr)
    norm = Normalize(model)
    losses: list[float] = []
    with frozen(model):
        for _ in tqdm(range(steps), desc="patch", mininterval=5):
            x = accel.to(pool.sample(batch_size, gen), dev)
            pos = positions(location, batch_size, patch_size, size, gen)
            shown = patch.clamp(0, 1) if bound == "clip" else patch
            with accel.autocast(dev):  # the encoder in bf16 with accelerator.amp
                with torch.no_grad():
                    clean = model.encode_image(norm(x))
                patched = model.encode_image(norm(paste(x, shown, pos)))
            clean = F.normalize(clean.float(), dim=-1)
            patched = F.normalize(patched.float(), dim=-1)
            loss = loss_fn(patched, clean, gen)  # in float32
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bound == "project":
                with torch.no_grad():
                    patch.clamp_(0, 1)
            losses.append(loss.item())
    return patch.detach().clamp(0, 1).cpu(), losses
