"""Blended, SIG and WaNet: pinned triggers and the invariants of each trigger function."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from clipbd import attacks, config

ROOT = Path(__file__).resolve().parents[1]
S = 32
CFGS = {
    "blended": {"poison_rate": 0.05, "alpha": 0.2, "fixed_pattern": True},
    "sig": {"poison_rate": 0.05, "amplitude": 60 / 255, "frequency": 6},
    "wanet": {"poison_rate": 0.05, "k": 4, "s": 1.0, "grid_rescale": 1},
}
NAMES = sorted(CFGS)


def make(name, **kw):
    return attacks.get(name, {**CFGS[name], **kw}, S)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def smooth_images(n, seed=0):
    low = torch.rand(n, 3, 4, 4, generator=gen(seed))
    return F.interpolate(low, size=(S, S), mode="bilinear", align_corners=True)


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_dtype_range(name):
    a = make(name)
    x = torch.rand(6, 3, S, S, generator=gen(1))
    y = a.apply(x, a.make_trigger(0), gen(2))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_trigger_pinned_by_seed(name):
    a = make(name)
    t1, t2 = a.make_trigger(0), a.make_trigger(0)
    assert t1.keys() == t2.keys() and len(t1) == 1
    assert all(torch.equal(t1[k], t2[k]) for k in t1)
    t3 = a.make_trigger(1)
    if name in ("blended", "wanet"):
        assert not any(torch.equal(t1[k], t3[k]) for k in t1)
    x = torch.rand(4, 3, S, S, generator=gen(1))
    assert torch.equal(a.apply(x, t1, gen(3)), a.apply(x, t2, gen(3)))


@pytest.mark.parametrize("name", NAMES)
def test_input_not_modified_in_place(name):
    a = make(name)
    x = torch.rand(4, 3, S, S, generator=gen(1))
    before = x.clone()
    a.apply(x, a.make_trigger(0), gen(0))
    assert torch.equal(x, before)


def test_blended_is_the_stated_blend():
    a = make("blended", alpha=0.3)
    trig = a.make_trigger(0)
    assert trig["pattern"].shape == (3, S, S)
    assert trig["pattern"].min() >= 0 and trig["pattern"].max() <= 1
    x = torch.rand(5, 3, S, S, generator=gen(1))
    y = a.apply(x, trig, gen(0))
    assert torch.allclose(y, 0.7 * x + 0.3 * trig["pattern"], atol=1e-6)


def test_blended_per_image_noise_variant():
    a = make("blended", fixed_pattern=False)
    x = torch.full((3, 3, S, S), 0.5)
    y = a.apply(x, a.make_trigger(0), gen(0))
    pattern = (y - 0.8 * x) / 0.2  # recovers each image's noise
    assert not torch.allclose(pattern[0], pattern[1])
    assert not torch.allclose(pattern[1], pattern[2])
    assert pattern.min() >= -1e-5 and pattern.max() <= 1 + 1e-5
    # per-image noise is drawn from `gen`: same generator seed, same output
    assert torch.equal(y, a.apply(x, a.make_trigger(0), gen(0)))
    assert not torch.equal(y, a.apply(x, a.make_trigger(0), gen(1)))


def test_sig_adds_the_signal_and_clips():
    a = make("sig")
    trig = a.make_trigger(0)
    sig = trig["signal"]
    assert sig.shape == (1, S, S)
    x = torch.rand(4, 3, S, S, generator=gen(1))
    assert torch.allclose(a.apply(x, trig, gen(0)), (x + sig).clamp(0, 1), atol=1e-6)
    # every row and every channel carry the same horizontal signal
    assert torch.equal(sig[0], sig[0, :1].expand(S, S))


def test_sig_amplitude_and_frequency():
    sig = make("sig").make_trigger(0)["signal"]
    delta = 60 / 255
    assert abs(sig.max().item() - delta) < 1e-3
    assert abs(sig.min().item() + delta) < 1e-3
    row = sig[0, 0]
    signs = torch.sign(row[row.abs() > 1e-6])
    changes = int((signs[1:] != signs[:-1]).sum())
    assert abs(changes - 2 * 6) <= 1
    # analytic form at a column
    j = 3
    assert math.isclose(row[j].item(), delta * math.sin(2 * math.pi * j * 6 / S), abs_tol=1e-6)


def test_wanet_grid_shape_and_normalization():
    a = make("wanet")
    noise = a.make_trigger(0)["noise_grid"]
    assert noise.shape == (S, S, 2)
    assert torch.isfinite(noise).all()


def test_wanet_k_defaults_to_image_side():
    a = make("wanet", k=None)
    g1 = a.make_trigger(0)["noise_grid"]
    g2 = make("wanet", k=32).make_trigger(0)["noise_grid"]
    assert torch.equal(g1, g2)


def test_wanet_zero_strength_is_identity():
    a = make("wanet", s=0.0)
    x = torch.rand(4, 3, S, S, generator=gen(1))
    y = a.apply(x, a.make_trigger(0), gen(0))
    assert torch.allclose(y, x, atol=1e-5)


def test_wanet_warp_is_small_but_real():
    a = make("wanet")
    x = smooth_images(8)
    y = a.apply(x, a.make_trigger(0), gen(0))
    diff = (y - x).abs().mean().item()
    assert 0 < diff < 0.1
    assert not torch.allclose(y, x, atol=1e-4)


def test_wanet_same_warp_for_every_image():
    a = make("wanet")
    trig = a.make_trigger(0)
    one = smooth_images(1, seed=4)
    batch = one.expand(5, -1, -1, -1).contiguous()
    y = a.apply(batch, trig, gen(0))
    for i in range(1, 5):
        assert torch.equal(y[i], y[0])
    # warping an image alone or inside a batch gives the same result
    assert torch.allclose(a.apply(one, trig, gen(9))[0], y[0], atol=1e-6)


def test_config_accepts_the_new_attacks_and_fills_defaults():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["grid"][0]["attacks"] = ["clean", "badnet", "blended", "sig", "wanet"]
    before = copy.deepcopy(cfg)
    out = config.resolve(cfg)
    assert out["attacks"]["blended"] == {"poison_rate": 0.05, "alpha": 0.2, "fixed_pattern": True}
    assert out["attacks"]["sig"] == {"poison_rate": 0.05, "amplitude": 0.23529411764705882,
                                     "frequency": 6}
    # s comes from config.yaml (2.0 on the tiny CLIP); k and grid_rescale from the schema
    assert out["attacks"]["wanet"] == {"poison_rate": 0.05, "k": None, "s": 2.0, "grid_rescale": 1}
    assert cfg == before
    for name in NAMES:  # the filled defaults build a working attack
        a = attacks.get(name, out["attacks"][name], out["image_size"])
        x = torch.rand(2, 3, S, S, generator=gen(1))
        assert a.apply(x, a.make_trigger(0), gen(0)).shape == x.shape


def test_benign_perturbations_follow_rvpt_appendix_b():
    from clipbd.report.gallery import benign_perturbations

    x = smooth_images(4, seed=7)
    out = benign_perturbations(x, seed=0)
    assert sorted(out) == ["Gaussian blur", "Gaussian noise", "colour jitter", "horizontal flip"]
    assert torch.equal(out["horizontal flip"], x.flip(-1))
    noise = out["Gaussian noise"] - x
    assert 0.0005 < noise.std().item() < 0.002  # sigma 0.001
    for name, y in out.items():
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1, name
    assert not torch.equal(out["Gaussian blur"], x)
