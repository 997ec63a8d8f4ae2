"""A small StegaStamp-style encoder/decoder in torch (the networks behind the SSBA attack).

The encoder maps an image [N,3,H,W] in [0,1] and a bit vector [N,B] to a residual bounded by
`eps` in L_inf: eps * softsign(raw) (softsign, not tanh: tanh saturates early in training
and stalls the secret's gradient). The secret enters as a learned [4,8,8] map, resized to each
feature resolution, so both networks work at any image size (32 px in the embedded study,
224 px for ViT-B/32). The decoder is a strided conv net with an adaptive 4x4 pool and a linear
layer: one logit per bit. The encoder uses no batch statistics, so an image's residual does
not depend on the batch it is in; the decoder (only used in training and for auditing) has
batch norm, which made the bits learnable within a few hundred steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SECRET_CH, SECRET_GRID = 4, 8


def secret_bits(secret: str, n: int) -> torch.Tensor:
    """The UTF-8 bits of `secret` (most significant first), cut or cycled to n bits, float [n].

    "Stega!!" has 56 bits. Cycling stands in for StegaStamp's BCH error-correcting code: a
    longer payload repeats the message instead of appending BCH parity bits.
    """
    raw = [(byte >> (7 - k)) & 1 for byte in secret.encode("utf-8") for k in range(8)]
    if not raw:
        raise ValueError("the SSBA secret must not be empty")
    return torch.tensor([raw[i % len(raw)] for i in range(n)], dtype=torch.float32)


def _conv(cin: int, cout: int, stride: int = 1, norm: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride, 1)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    return nn.Sequential(*layers, nn.LeakyReLU(0.2))


class Encoder(nn.Module):
    """A two-level U-Net over (image, secret map) with skip connections."""

    def __init__(self, bits: int, width: int = 16):
        super().__init__()
        w = width
        self.secret = nn.Linear(bits, SECRET_CH * SECRET_GRID * SECRET_GRID)
        self.inc = _conv(3 + SECRET_CH, w)
        self.down1 = _conv(w + SECRET_CH, 2 * w, 2)
        self.down2 = _conv(2 * w + SECRET_CH, 4 * w, 2)
        self.up1 = _conv(4 * w + 2 * w, 2 * w)
        self.up2 = _conv(2 * w + w, w)
        self.out = nn.Conv2d(w + 3 + SECRET_CH, 3, 1)

    def forward(self, x: torch.Tensor, bits: torch.Tensor, eps: float) -> torch.Tensor:
        """Residual [N,3,H,W] with |residual| <= eps."""
        grid = self.secret(bits * 2 - 1).view(len(x), SECRET_CH, SECRET_GRID, SECRET_GRID)

        def with_secret(h):
            return torch.cat([h, F.interpolate(grid, size=h.shape[-2:], mode="bilinear",
                                               align_corners=False)], 1)

        h0 = self.inc(with_secret(x - 0.5))
        h1 = self.down1(with_secret(h0))
        h2 = self.down2(with_secret(h1))
        u1 = self.up1(torch.cat([F.interpolate(h2, size=h1.shape[-2:]), h1], 1))
        u2 = self.up2(torch.cat([F.interpolate(u1, size=h0.shape[-2:]), h0], 1))
        return eps * F.softsign(self.out(with_secret(torch.cat([u2, x - 0.5], 1))))


class Decoder(nn.Module):
    """Strided convs, adaptive 4x4 pool, linear: bit logits [N,B]."""

    def __init__(self, bits: int, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(_conv(3, 2 * w, 2, True), _conv(2 * w, 4 * w, 2, True),
                                      _conv(4 * w, 4 * w, 2, True), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(4 * w * 16, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x - 0.5).flatten(1))


def width_of(state: dict[str, torch.Tensor]) -> int:
    """Recover `width` from an encoder state dict (its first conv's output channels)."""
    return state["inc.0.weight"].shape[0]
