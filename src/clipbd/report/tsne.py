"""Exact t-SNE (van der Maaten & Hinton 2008) in torch, for a few hundred points (RVPT Fig. 5).

Affinities: a Gaussian per point whose bandwidth is found by bisection so that its entropy
matches log(perplexity); symmetrized. Embedding: Student-t similarities, gradient descent
with momentum and early exaggeration. Deterministic for a given seed.
"""
from __future__ import annotations

import math

import torch


def _affinities(x: torch.Tensor, perplexity: float, iters: int = 60) -> torch.Tensor:
    d = torch.cdist(x, x).pow(2)
    n = len(x)
    target = math.log(perplexity)
    lo = torch.full((n, 1), 1e-10, dtype=x.dtype)
    hi = torch.full((n, 1), 1e10, dtype=x.dtype)
    beta = torch.ones(n, 1, dtype=x.dtype)
    eye = torch.eye(n, dtype=torch.bool)
    for _ in range(iters):
        logits = (-d * beta).masked_fill(eye, -math.inf)
        p = torch.softmax(logits, dim=1)
        entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(1, keepdim=True)
        too_flat = entropy > target  # bandwidth too wide: raise beta
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(hi >= 1e10, beta * 2, (lo + hi) / 2)
    p = (p + p.T) / (2 * n)
    return p.clamp_min(1e-12)


def tsne(x: torch.Tensor, dims: int = 2, perplexity: float = 30.0, steps: int = 500,
         lr: float | None = None, seed: int = 0) -> torch.Tensor:
    """[N, F] -> [N, dims]. lr None: max(N / 48, 50), the usual choice for small N."""
    x = x.double()
    n = len(x)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    lr = lr or max(n / 48, 50.0)
    p = _affinities(x, min(perplexity, (n - 1) / 3))
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, dims, generator=g, dtype=torch.float64) * 1e-4
    velocity = torch.zeros_like(y)
    eye = torch.eye(n, dtype=torch.bool)
    for step in range(steps):
        exaggeration = 12.0 if step < 100 else 1.0
        momentum = 0.5 if step < 100 else 0.8
        num = (1.0 / (1.0 + torch.cdist(y, y).pow(2))).masked_fill(eye, 0.0)
        q = (num / num.sum()).clamp_min(1e-12)
        w = (exaggeration * p - q) * num
        grad = 4.0 * (w.sum(1, keepdim=True) * y - w @ y)
        velocity = momentum * velocity - lr * grad
        y = y + velocity
        y = y - y.mean(0)
    return y.float()
