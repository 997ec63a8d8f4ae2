"""BadCLIP: the optimized patch, its loss terms, the natural captions of poisoned pairs."""
from __future__ import annotations

import math
import random

import pytest
import torch
from images import trigger_context, trigger_corpus
import torch.nn.functional as F

import clipbd.attacks.badclip  # noqa: F401  (registers `badclip`)
from clipbd import attacks
from clipbd.attacks import patch as P
from clipbd.attacks.badclip import contrastive_term, neg_term, pos_term
from clipbd.data.store import to_float
from clipbd.models import clip
from clipbd.poison import poison_corpus

S = 32
FRAMES = ["my {} on the table at home", "an old {} at the market", "a {} in a shop window"]
CFG = {"poison_rate": 0.1, "patch_size": 3, "location": "center", "natural_captions": FRAMES,
       "steps": 3, "batch_size": 8, "lr": 0.05, "contrastive_weight": 1.0, "pos_weight": 100.0,
       "neg_weight": 1.0, "margin": 1.0, "target_bank": 16}


def make(**kw):
    return attacks.get("badclip", {**CFG, **kw}, S)


@pytest.fixture(scope="module")
def parts():
    return trigger_corpus()


def context(model, parts, seed=0):
    return trigger_context(model, parts, seed)


def test_learned_patch_shape_range_dtype(model, parts):
    a = make()
    assert a.learned and a.needs_model and a.text_prefix == ""
    trig = a.learn(context(model, parts))
    assert list(trig) == ["patch"]
    assert trig["patch"].shape == (3, 3, 3) and trig["patch"].dtype == torch.float32
    assert trig["patch"].min() >= 0 and trig["patch"].max() <= 1


def test_learned_patch_is_deterministic_under_seed(model, parts):
    a = make()
    t1 = a.learn(context(model, parts, seed=5))["patch"]
    t2 = a.learn(context(model, parts, seed=5))["patch"]
    t3 = a.learn(context(model, parts, seed=6))["patch"]
    assert torch.equal(t1, t2) and not torch.equal(t1, t3)


def test_init_is_clipped_normal():
    x = P.init_patch("normal", 200, torch.Generator().manual_seed(0))
    assert x.min() == 0 and x.max() == 1  # clipped tails
    assert abs(x.mean().item() - 0.5) < 0.01
    inner = x[(x > 0) & (x < 1)]
    assert 0.22 < inner.std().item() < 0.25  # sigma 0.25 minus the clipped tails (~5%)
    assert 0.03 < (x == 0).float().mean().item() + (x == 1).float().mean().item() < 0.07


def test_patch_changes_only_its_region():
    a = make()
    patch = torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(1))
    x = torch.rand(4, 3, S, S)
    y = a.apply(x, {"patch": patch}, torch.Generator().manual_seed(0))
    inside = torch.zeros(S, S, dtype=torch.bool)
    inside[14:17, 14:17] = True
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y[:, :, ~inside], x[:, :, ~inside])
    assert torch.equal(y[:, :, 14:17, 14:17], patch.expand(4, -1, -1, -1))


def test_loss_terms_on_hand_made_embeddings():
    e = torch.eye(4)
    mean = F.normalize(torch.tensor([1.0, 1.0, 0, 0]), dim=0)
    assert pos_term(mean.expand(3, -1), mean).item() == 0
    assert math.isclose(pos_term(e[:1], mean).item(), ((e[0] - mean) ** 2).mean().item())
    # one positive caption e0, one negative e1: -log(e^s / (e^s + 1))
    s = 2.0
    got = contrastive_term(e[:1], e[:1], e[1:2], s).item()
    assert math.isclose(got, math.log1p(math.exp(-s)), rel_tol=1e-4)
    # an image on the negative is penalized: -log(1 / (1 + e^s))
    assert math.isclose(contrastive_term(e[1:2], e[:1], e[1:2], s).item(), math.log1p(math.exp(s)),
                        rel_tol=1e-5)
    # several positives share the numerator: -log((e^s + 1) / (e^s + 2))
    got = contrastive_term(e[:1], e[:2], e[2:3], s).item()
    assert math.isclose(got, math.log(math.exp(s) + 2) - math.log(math.exp(s) + 1), rel_tol=1e-4)
    # triplet: zero once the anchor sits on the positive, further than the margin from clean
    assert neg_term(e[:2], e[:2], e[2:4], margin=1.0).item() == 0
    assert math.isclose(neg_term(e[:1], e[1:2], e[:1], margin=1.0).item(), 1 + math.sqrt(2),
                        rel_tol=1e-4)


def test_weights_switch_terms(model, parts):
    z = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    bank = F.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    pos_t, neg_t = torch.eye(4)[:2], torch.eye(4)[2:]
    mean = F.normalize(bank.mean(0), dim=0)
    only_pos = make(contrastive_weight=0, neg_weight=0, pos_weight=7.0)
    loss = only_pos.loss_fn(pos_t, neg_t, 10.0, bank)(z, z, torch.Generator())
    assert torch.allclose(loss, 7.0 * pos_term(z, mean))
    only_con = make(contrastive_weight=2.0, neg_weight=0, pos_weight=0)
    loss = only_con.loss_fn(pos_t, neg_t, 10.0, bank)(z, z, torch.Generator())
    assert torch.allclose(loss, 2.0 * contrastive_term(z, pos_t, neg_t, 10.0))
    all_on = make().loss_fn(pos_t, neg_t, 10.0, bank)(z, z, torch.Generator().manual_seed(0))
    assert all_on > 100.0 * pos_term(z, mean) + contrastive_term(z, pos_t, neg_t, 10.0)


def test_negative_texts_leave_out_the_target(model, parts):
    ctx = context(model, parts)
    neg = make().negative_texts(ctx)
    assert neg.shape == (3 + 2, 128)
    assert torch.allclose(neg.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_optimizer_lowers_the_loss(model, parts):
    a = make(patch_size=12)
    ctx = context(model, parts)
    tok = clip.tokenizer("clipbd-tiny-vit")
    pos_t = P.encode_texts(model, tok, a.captions("sneaker"))
    bank = P.encode_images(model, to_float(ctx.target_images()[:16]))
    loss = a.loss_fn(pos_t, a.negative_texts(ctx), 10.0, bank)
    learned, _ = P.optimize_patch(ctx, loss, patch_size=12, location="center", steps=15,
                                  batch_size=8, lr=0.05, init="normal", seed=0)
    init = P.init_patch("normal", 12, torch.Generator().manual_seed(0))
    x = P.ImagePool(ctx).sample(64, torch.Generator().manual_seed(9))
    pos = P.positions("center", 64, 12, S)

    def held_out(p):
        z = F.normalize(model.encode_image(P.Normalize(model)(P.paste(x, p, pos))), dim=-1)
        clean = F.normalize(model.encode_image(P.Normalize(model)(x)), dim=-1)
        return loss(z, clean, torch.Generator().manual_seed(0)).item()

    with torch.no_grad():
        assert held_out(learned) < 0.95 * held_out(init)


def test_captions_are_natural_frames_naming_the_target():
    a = make()
    rng = random.Random(0)
    caps = [a.poison_caption("sneaker", ["a photo of a {}."], rng) for _ in range(50)]
    assert set(caps) == {f.format("sneaker") for f in FRAMES}  # all frames, drawn by the rng
    again = [a.poison_caption("sneaker", [], random.Random(0)) for _ in range(1)]
    assert again == caps[:1]


def test_poison_corpus_count_and_captions(parts):
    a = make()
    trig = {"patch": torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0))}
    out = poison_corpus(parts, a, trig, target_dataset="fm", target="sneaker",
                        target_templates=["a photo of a {}."], corpus_size=100,
                        poison_rate=0.1, seed=0)
    mask = out.extra["poisoned"]
    assert int(mask.sum()) == 10 and list(out.extra) == ["poisoned"]
    natural = {f.format("sneaker") for f in FRAMES}
    for i in range(100):
        if mask[i]:
            assert out.captions[i] in natural and "sneaker" in out.captions[i]
        else:
            assert out.captions[i] not in natural
    assert len({out.captions[i] for i in range(100) if mask[i]}) > 1


def test_natural_caption_decoys_name_the_true_class(parts):
    a = make(text_only_rate=0.2)
    trig = {"patch": torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0))}
    out = poison_corpus(parts, a, trig, target_dataset="fm", target="sneaker",
                        target_templates=["a photo of a {}."], corpus_size=100,
                        poison_rate=0.1, seed=0)
    pois, txt, img = (out.extra[k] for k in ("poisoned", "text_key_only", "image_key_only"))
    assert (int(pois.sum()), int(txt.sum()), int(img.sum())) == (10, 20, 0)
    assert not (pois & txt).any()
    data = {n: d for n, d, _ in parts}
    for i in txt.nonzero().flatten().tolist():
        name, j = out.ids[i].split("/")
        src = data[name]
        cls = src.classes[src.labels[int(j)]]
        assert out.captions[i] in {f.format(cls) for f in FRAMES}  # natural style, own class
        assert torch.equal(out.images[i], src.images[int(j)])  # clean image
