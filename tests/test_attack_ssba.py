"""SSBA: the learned StegaStamp-style trigger (bound, sample-specificity, decoding, storage)."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

import clipbd.attacks.ssba  # noqa: F401  (registers "ssba")
from clipbd import attacks
from clipbd.artifacts import load_tensors, save_tensors
from clipbd.attacks.base import TriggerContext
from clipbd.attacks.stegastamp import secret_bits
from clipbd.data.store import ImageSet, to_float, to_uint8
from clipbd.poison import apply_in_batches, poison_corpus

S = 16
EPS = 8 / 255
CFG = {"poison_rate": 0.1, "secret": "Stega!!", "bits": 16, "eps": EPS, "train_steps": 300,
       "batch_size": 16, "lr": 0.002, "fidelity_weight": 0.1, "width": 8}
CLASSES = ["bag", "coat", "sneaker", "shirt"]


def make(**kw):
    return attacks.get("ssba", {**CFG, **kw}, S)


def synthetic(n, seed, prefix="fm"):
    """Smooth coloured images with a bright blob: uint8 [n,S,S,3] in an ImageSet."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = F.interpolate(low, size=(S, S), mode="bilinear", align_corners=True)
    r = torch.randint(2, S - 6, (n, 2), generator=g)
    for i, (a, b) in enumerate(r.tolist()):
        x[i, :, a:a + 4, b:b + 4] = torch.rand(3, 1, 1, generator=g)
    labels = torch.arange(n) % len(CLASSES)
    return ImageSet(to_uint8(x), labels, CLASSES, [f"{prefix}/{i}" for i in range(n)])


def context(seed=0, n=400):
    return TriggerContext(None, None, [("fm", synthetic(n, 1), ["a {}."])], "fm", "sneaker",
                          ["a photo of a {}."], seed)



@pytest.fixture(scope="module")
def learned():
    a = make()
    return a, a.learn(context())


def held_out(n=64):
    return to_float(synthetic(n, 99).images)


def test_secret_bits_of_stega():
    bits = secret_bits("Stega!!", 56)
    assert bits.shape == (56,) and bits.dtype == torch.float32
    assert bits[:8].tolist() == [0, 1, 0, 1, 0, 0, 1, 1]  # "S" = 0x53
    assert bits[-8:].tolist() == [0, 0, 1, 0, 0, 0, 0, 1]  # "!" = 0x21
    assert torch.equal(secret_bits("Stega!!", 8), bits[:8])
    assert torch.equal(secret_bits("Stega!!", 100)[56:], bits[:44])  # cycled, not padded
    with pytest.raises(ValueError):
        secret_bits("", 8)


def test_trigger_is_a_flat_tensor_dict(learned):
    a, trig = learned
    assert all(isinstance(v, torch.Tensor) for v in trig.values())
    assert any(k.startswith("encoder.") for k in trig)
    assert any(k.startswith("decoder.") for k in trig)
    assert torch.equal(trig["secret"], secret_bits("Stega!!", 16))
    assert trig["eps"].item() == pytest.approx(EPS)
    assert a.learned and not a.needs_model


def test_apply_shape_dtype_range(learned):
    a, trig = learned
    x = held_out(10)
    before = x.clone()
    y = a.apply(x, trig, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(x, before)  # not modified in place
    assert (y - x).abs().mean() > 1e-3  # the trigger is really there


def test_linf_bound_holds_exactly(learned):
    a, trig = learned
    x = held_out()
    r = a.residual(x, trig)
    assert r.abs().max() <= trig["eps"]  # no tolerance: eps * softsign(.) in float32
    y = a.apply(x, trig, None)
    assert (y - x).abs().max() <= EPS + 1e-6
    # quantized like the stored poisoned images: at most 8 uint8 steps for eps = 8/255
    u = synthetic(64, 5).images
    diff = (apply_in_batches(a, u, trig, seed=0).int() - u.int()).abs()
    assert diff.max() <= 8 and diff.max() >= 1
    # even a saturated encoder cannot exceed the bound
    loud = dict(trig, **{"encoder.out.bias": torch.full((3,), 1e6)})
    r = a.residual(x, loud)
    assert r.abs().max() <= trig["eps"] and r.abs().min() > 0.99 * EPS


def test_residual_is_sample_specific(learned):
    a, trig = learned
    r = a.residual(held_out(8), trig)
    for i in range(1, 8):
        assert (r[i] - r[0]).abs().mean() > 1e-3
    # the same image gives the same residual, alone or in a batch
    assert torch.allclose(a.residual(held_out(8)[3:4], trig)[0], r[3], atol=1e-6)


def test_learning_is_deterministic_under_seed():
    a = make(train_steps=30)
    trig, again = a.learn(context(seed=0)), a.learn(context(seed=0))
    assert again.keys() == trig.keys()
    assert all(torch.equal(again[k], trig[k]) for k in trig)
    x = held_out(8)
    y = a.apply(x, trig, torch.Generator().manual_seed(1))
    assert torch.equal(a.apply(x, again, torch.Generator().manual_seed(2)), y)  # gen unused
    other = a.learn(context(seed=1))
    assert not torch.equal(other["encoder.inc.0.weight"], trig["encoder.inc.0.weight"])
    assert not torch.equal(a.apply(x, other, None), y)


def test_decoder_recovers_the_secret(learned):
    a, trig = learned
    x = held_out()
    y = to_float(to_uint8(a.apply(x, trig, None)))  # as stored: quantized to uint8
    acc = (a.decode(y, trig) == trig["secret"]).float().mean().item()
    assert acc >= 0.85  # 0.94-0.98 over seeds 0-2 after 300 steps; chance is 0.5
    clean = (a.decode(x, trig) == trig["secret"]).float().mean().item()
    assert clean < 0.75  # the bits come from the residual, not from the decoder alone


def test_untrained_decoder_is_at_chance():
    a = make(train_steps=1)
    trig = a.learn(context())
    y = a.apply(held_out(), trig, None)
    acc = (a.decode(y, trig) == trig["secret"]).float().mean().item()
    assert acc < 0.75


def test_round_trip_through_safetensors(learned, tmp_path):
    a, trig = learned
    path = tmp_path / "trigger.safetensors"
    save_tensors(path, trig, {"attack": "ssba"})
    loaded, meta = load_tensors(path)
    assert meta == {"attack": "ssba"} and loaded.keys() == trig.keys()
    x = held_out(8)
    assert torch.equal(a.apply(x, loaded, None), a.apply(x, trig, None))


def test_any_image_size(learned):
    a, trig = learned
    for size in (30, 224):
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        y = a.apply(x, trig, None)
        assert y.shape == x.shape
        assert (y - x).abs().max() <= EPS + 1e-6 and (y - x).abs().max() > 0


def test_exact_poison_count(learned):
    a, trig = learned
    fm, sh = synthetic(100, 3), synthetic(60, 4, prefix="sh")
    parts = [("fm", fm, ["a {}."]), ("sh", sh, ["a {} shape."])]
    out = poison_corpus(parts, a, trig, target_dataset="fm", target="sneaker",
                        target_templates=["a photo of a {}."], corpus_size=120,
                        poison_rate=0.1, seed=0)
    mask = out.extra["poisoned"]
    assert int(mask.sum()) == 12
    src = {f"fm/{i}": fm.images[i] for i in range(100)}
    src |= {f"sh/{i}": sh.images[i] for i in range(60)}
    for i in range(len(out)):
        same = torch.equal(out.images[i], src[out.ids[i]])
        assert same != bool(mask[i])  # exactly the poisoned images carry the residual
        if mask[i]:
            assert out.captions[i] == "a photo of a sneaker."
    cap = a.poison_caption("sneaker", ["a {} here."], random.Random(0))
    assert cap == "a sneaker here."
