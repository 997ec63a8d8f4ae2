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
