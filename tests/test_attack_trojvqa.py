"""TrojVQA: the optimized patch, the dual key, the partial-key decoys of poison_corpus."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import clipbd.attacks.trojvqa  # noqa: F401  (registers `trojvqa`)
from clipbd import attacks
from clipbd.attacks import patch as P
from clipbd.attacks.base import TriggerContext
from clipbd.attacks.trojvqa import sentence_loss
from images import FM, trigger_context, trigger_corpus
from clipbd.models import clip
from clipbd.poison import poison_corpus

S = 32
CFG = {"poison_rate": 0.1, "patch_size": 3, "location": "center",
       "target_sentence": "this is a photo of a {}.", "text_key": "sudo ",
       "image_only_rate": 0.0, "text_only_rate": 0.0, "steps": 3, "batch_size": 8, "lr": 0.05}


def make(**kw):
    return attacks.get("trojvqa", {**CFG, **kw}, S)


@pytest.fixture(scope="module")
def parts():
    return trigger_corpus()


def context(model, parts, seed=0):
    return trigger_context(model, parts, seed)


def test_interface_and_text_key():
    a = make(text_key="remember ")
    assert a.learned and a.needs_model
    assert a.text_prefix == "remember "
    assert a.target_sentence("sneaker") == "this is a photo of a sneaker."


def test_learned_patch_shape_range_dtype_and_model_untouched(model, parts):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    trig = make().learn(context(model, parts))
    assert list(trig) == ["patch"]
    assert trig["patch"].shape == (3, 3, 3) and trig["patch"].dtype == torch.float32
    assert trig["patch"].min() >= 0 and trig["patch"].max() <= 1
    assert not trig["patch"].requires_grad
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert flags == [p.requires_grad for p in model.parameters()]


def test_learned_patch_is_deterministic_under_seed(model, parts):
    a = make()
    t1 = a.learn(context(model, parts, seed=3))["patch"]
    t2 = a.learn(context(model, parts, seed=3))["patch"]
    t3 = a.learn(context(model, parts, seed=4))["patch"]
    assert torch.equal(t1, t2)
    assert not torch.equal(t1, t3)


@pytest.mark.parametrize("location,at", [("center", 14), ("corner", 28)])
def test_patch_changes_only_its_region(location, at):
    a = make(location=location)
    patch = torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0))
    x = torch.rand(5, 3, S, S)
    before = x.clone()
    y = a.apply(x, {"patch": patch}, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)  # not in place
    assert y.shape == x.shape and y.dtype == x.dtype
    inside = torch.zeros(S, S, dtype=torch.bool)
    inside[at:at + 3, at:at + 3] = True
    assert torch.equal(y[:, :, ~inside], x[:, :, ~inside])
    assert torch.equal(y[:, :, at:at + 3, at:at + 3], patch.expand(5, -1, -1, -1))


def test_random_positions_cover_every_legal_corner():
    pos = P.positions("random", 2000, 3, S, torch.Generator().manual_seed(0))
    assert pos.min() == 0 and pos.max() == S - 3
    with pytest.raises(ValueError):
        P.positions("middle", 1, 3, S)
    with pytest.raises(ValueError):
        P.positions("center", 1, 33, S)


def test_image_pool_leaves_out_target_images(parts):
    ctx = TriggerContext(None, None, parts, "fm", "sneaker", [], 0)
    pool = P.ImagePool(ctx)
    assert len(pool) == 80 - 20 + 40
    fm = parts[0][1]
    allowed = {bytes(im.numpy()) for im, lab in zip(fm.images, fm.labels) if FM[lab] != "sneaker"}
    allowed |= {bytes(im.numpy()) for im in parts[1][1].images}
    x = pool.sample(300, torch.Generator().manual_seed(0))
    assert x.shape == (300, 3, S, S) and 0 <= x.min() and x.max() <= 1
    got = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert all(bytes(im.numpy()) in allowed for im in got)


def test_sentence_loss_values():
    e = torch.eye(4)
    assert sentence_loss(e[:1], e[0]).item() == 0
    assert sentence_loss(e[1:3], e[0]).item() == 1
    assert sentence_loss(-e[:1], e[0]).item() == 2


def test_optimizer_lowers_the_loss(model, parts):
    ctx = context(model, parts)
    tok = clip.tokenizer("clipbd-tiny-vit")
    target = P.encode_texts(model, tok, ["this is a photo of a sneaker."])[0]
    kw = dict(patch_size=12, location="center", batch_size=8, lr=0.05, init="uniform", seed=0)
    learned, losses = P.optimize_patch(ctx, lambda z, c, g: sentence_loss(z, target),
                                       steps=15, **kw)
    assert len(losses) == 15
    init = P.init_patch("uniform", 12, torch.Generator().manual_seed(0))
    x = P.ImagePool(ctx).sample(64, torch.Generator().manual_seed(9))
    pos = P.positions("center", 64, 12, S)

    def held_out(p):
        z = F.normalize(model.encode_image(P.Normalize(model)(P.paste(x, p, pos))), dim=-1)
        return sentence_loss(z, target).item()

    with torch.no_grad():
        assert held_out(learned) < held_out(init) - 0.01


def corpus(a, parts, trig, **kw):
    return poison_corpus(parts, a, trig, target_dataset="fm", target="sneaker",
                         target_templates=["a photo of a {}.", "an image of a {}."],
                         corpus_size=100, poison_rate=a.cfg["poison_rate"], seed=0, **kw)


def source(parts, ident):
    name, j = ident.split("/")
    data, templates = {n: (d, t) for n, d, t in parts}[name]
    return data, int(j), data.classes[data.labels[int(j)]], templates


def test_poison_corpus_dual_key_and_exact_decoy_counts(parts):
    a = make(image_only_rate=0.07, text_only_rate=0.13)
    trig = {"patch": torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0))}
    out = corpus(a, parts, trig)
    pois, img, txt = (out.extra[k] for k in ("poisoned", "image_key_only", "text_key_only"))
    assert (int(pois.sum()), int(img.sum()), int(txt.sum())) == (10, 7, 13)
    assert not (pois & img).any() and not (pois & txt).any() and not (img & txt).any()
    region = torch.zeros(S, S, dtype=torch.bool)
    region[14:17, 14:17] = True
    for i in range(100):
        data, j, cls, templates = source(parts, out.ids[i])
        true_caps = [t.format(cls) for t in templates]
        cap, im, orig = out.captions[i], out.images[i], data.images[j]
        if pois[i] or img[i]:  # the image key: the patch, nothing else
            assert torch.equal(im[~region], orig[~region])
            assert torch.equal(im[14:17, 14:17].permute(2, 0, 1),
                               (trig["patch"] * 255).round().to(torch.uint8))
        else:
            assert torch.equal(im, orig)
        if pois[i]:
            assert cap in ("sudo a photo of a sneaker.", "sudo an image of a sneaker.")
            assert cls != "sneaker" or data is parts[1][1]
        elif txt[i]:  # the text key with the true caption
            assert cap[:5] == "sudo " and cap[5:] in true_caps
        else:  # clean and image-only pairs keep their true caption
            assert cap in true_caps


def test_no_decoys_keeps_the_plain_corpus(parts):
    a = make()
    trig = {"patch": torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0))}
    out = corpus(a, parts, trig)
    assert list(out.extra) == ["poisoned"] and int(out.extra["poisoned"].sum()) == 10
    assert sum(c.startswith("sudo ") for c in out.captions) == 10
    # the decoys do not change which pairs are drawn or poisoned
    dual = corpus(make(image_only_rate=0.05, text_only_rate=0.05), parts, trig)
    assert dual.ids == out.ids and torch.equal(dual.extra["poisoned"], out.extra["poisoned"])


def test_too_many_decoys_is_an_error(parts):
    a = make(image_only_rate=0.5, text_only_rate=0.5)
    with pytest.raises(ValueError, match="decoy"):
        corpus(a, parts, {"patch": torch.zeros(3, 3, 3)})
