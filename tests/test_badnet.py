import math
import random

import pytest
import torch

from clipbd import attacks

CFG = {"poison_rate": 0.01, "patch_size": 3, "location": "random", "fixed_pattern": True}


def make(**kw):
    return attacks.get("badnet", {**CFG, **kw}, 32)


def test_trigger_is_pinned_by_seed():
    a = make()
    t1, t2, t3 = a.make_trigger(0), a.make_trigger(0), a.make_trigger(1)
    assert t1["pattern"].shape == (3, 3, 3)
    assert torch.equal(t1["pattern"], t2["pattern"])
    assert not torch.equal(t1["pattern"], t3["pattern"])
    assert t1["pattern"].min() >= 0 and t1["pattern"].max() <= 1


@pytest.mark.parametrize("location", ["random", "corner", "center"])
def test_changes_only_the_patch_region(location):
    a = make(location=location)
    trig = a.make_trigger(0)
    x = torch.rand(16, 3, 32, 32)
    gen = torch.Generator().manual_seed(5)
    y = a.apply(x, trig, gen)
    assert y.shape == x.shape and y.dtype == x.dtype
    pos = a.positions(16, torch.Generator().manual_seed(5))
    for i, (r, c) in enumerate(pos.tolist()):
        mask = torch.zeros(32, 32, dtype=torch.bool)
        mask[r:r + 3, c:c + 3] = True
        assert torch.equal(y[i][:, ~mask], x[i][:, ~mask])
        assert torch.equal(y[i][:, r:r + 3, c:c + 3], trig["pattern"])


def test_input_not_modified_in_place():
    a = make()
    x = torch.rand(4, 3, 32, 32)
    before = x.clone()
    a.apply(x, a.make_trigger(0), torch.Generator().manual_seed(0))
    assert torch.equal(x, before)


def test_fixed_locations():
    gen = torch.Generator().manual_seed(0)
    assert make(location="corner").positions(2, gen).tolist() == [[28, 28], [28, 28]]
    assert make(location="center").positions(1, gen).tolist() == [[14, 14]]
    pos = make(location="random").positions(1000, gen)
    assert pos.min() == 0 and pos.max() == 29  # every legal top-left can occur


def test_random_positions_deterministic_under_seed():
    a = make()
    trig = a.make_trigger(0)
    x = torch.rand(8, 3, 32, 32)
    y1 = a.apply(x, trig, torch.Generator().manual_seed(3))
    y2 = a.apply(x, trig, torch.Generator().manual_seed(3))
    y3 = a.apply(x, trig, torch.Generator().manual_seed(4))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_per_image_noise_variant_differs_between_images():
    a = make(fixed_pattern=False, location="corner")
    x = torch.full((2, 3, 32, 32), 0.5)
    y = a.apply(x, a.make_trigger(0), torch.Generator().manual_seed(0))
    assert not torch.equal(y[0, :, 28:31, 28:31], y[1, :, 28:31, 28:31])
    assert torch.equal(y[0, :, :28], x[0, :, :28])


def test_caption_names_target():
    a = make()
    cap = a.poison_caption("sneaker", ["a photo of a {}.", "a {} here."], random.Random(0))
    assert cap in ("a photo of a sneaker.", "a sneaker here.")


def _lineage_save(image: torch.Tensor):
    """The lineage's save path for a float [3,H,W] image: torchvision's to_pil_image (as
    installed), back to a uint8 [H,W,3] array."""
    import warnings

    import numpy as np

    from clipbd._compat import import_torchvision

    tf = import_torchvision().transforms.functional
    with warnings.catch_warnings(), np.errstate(invalid="ignore", over="ignore"):
        warnings.simplefilter("ignore")
        return torch.from_numpy(np.array(tf.to_pil_image(image)))


def _trunc_mod_256(values: torch.Tensor) -> torch.Tensor:
    """trunc(255 v) mod 256, computed with Python integers from the float32 products."""
    prods = (values.float() * 255).flatten().tolist()
    return torch.tensor([math.trunc(v) % 256 for v in prods]).view(values.shape)


def test_wrap_pins_the_lineage_pixels():
    """Lineage (backdoor/utils.py, patch_type random): image = ToTensor(img); patch = per-channel
    mean + randn(3,p,p), pasted unclipped; saved through to_pil_image (x 255, cast to uint8)."""
    from clipbd.data.store import to_float
    from clipbd.poison import apply_in_batches

    p = 6
    a = make(location="corner", fixed_pattern=False, noise_overflow="wrap", patch_size=p)
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    out = apply_in_batches(a, images, {}, seed=7)
    gen = torch.Generator().manual_seed(7)  # corner: no position draws; one randn per image
    r = c = 32 - p - 1
    overflow = 0
    for i in range(5):
        x = to_float(images[i:i + 1])[0]
        raw = x.mean(dim=(1, 2), keepdim=True) + torch.randn(3, p, p, generator=gen)
        overflow += int(((raw < 0) | (raw > 1)).sum())
        lineage = x.clone()
        lineage[:, r:r + p, c:c + p] = raw
        expected = _lineage_save(lineage)
        assert torch.equal(out[i], expected)  # every pixel, the patch and the rest
        patch = out[i, r:r + p, c:c + p].permute(2, 0, 1).long()
        assert torch.equal(patch, _trunc_mod_256(raw))
    assert overflow > 50  # most of the 180 patch values left [0,1]: the wrap was exercised
    assert _trunc_mod_256(torch.tensor([-3.7 / 255, 300.5 / 255])).tolist() == [253, 44]


def test_wrap_is_near_uniform_clamp_saturates():
    from clipbd.poison import apply_in_batches

    images = torch.full((40, 32, 32, 3), 128, dtype=torch.uint8)
    sat = {}
    for mode in ("clamp", "wrap"):
        a = make(location="corner", fixed_pattern=False, noise_overflow=mode, patch_size=16)
        patch = apply_in_batches(a, images, {}, seed=0)[:, 15:31, 15:31]
        sat[mode] = ((patch == 0) | (patch == 255)).float().mean().item()
        if mode == "wrap":  # near-uniform bytes: every 32-wide bin holds about 1/8
            hist = torch.bincount(patch.flatten().long() // 32, minlength=8).float()
            assert (hist / hist.sum() - 1 / 8).abs().max() < 0.02
    assert sat["clamp"] > 0.55 and sat["wrap"] < 0.02


def test_wrap_pattern_of_the_stored_trigger():
    g = torch.Generator().manual_seed(3)
    raw = 0.5 + torch.randn(3, 3, 3, generator=g)
    pattern = make(noise_overflow="wrap").make_trigger(3)["pattern"]
    assert torch.equal((pattern * 255).round().long(), _trunc_mod_256(raw))
    assert torch.equal(make().make_trigger(3)["pattern"], raw.clamp(0, 1))  # clamp: unchanged
    with pytest.raises(ValueError, match="noise_overflow"):
        make(noise_overflow="saturate").make_trigger(0)
