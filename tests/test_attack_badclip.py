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


# ---- the lineage recipe (config/paper.yaml) ----

LINEAGE = {**CFG, "contrastive": "in_batch", "contrastive_weight": 1.0, "pos_weight": 0.0,
           "neg_weight": 500.0, "margin": 1.0, "triplet_negative": "self",
           "target_source": "corpus", "pool": "backdoor", "pool_size": 30, "bound": "clip",
           "lr": 1e-3, "natural_sample": 5}
EPS = 1e-6  # torch's pairwise_distance adds it to the difference


def _dist(a, b):
    return math.sqrt(sum((x - y + EPS) ** 2 for x, y in zip(a, b)))


def test_in_batch_term_exact():
    from clipbd.attacks.badclip import in_batch_term

    e = torch.eye(2)
    s = 2.0  # matched pairs on orthogonal captions: each CE is log(1 + e^-s), both directions
    assert math.isclose(in_batch_term(e, e, s).item(), math.log1p(math.exp(-s)), rel_tol=1e-6)
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # asymmetric: image->text and text->image differ
    ex = math.exp
    i2t = -math.log(ex(1) / (ex(1) + 1)) - math.log(ex(0.8) / (ex(0.6) + ex(0.8)))  # rows
    t2i = -math.log(ex(1) / (ex(1) + ex(0.6))) - math.log(ex(0.8) / (1 + ex(0.8)))  # columns
    assert math.isclose(in_batch_term(z, e, 1.0).item(), (i2t + t2i) / 4, rel_tol=1e-6)


def test_triplet_margin_1_weight_500_exact():
    a, p, n = [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]
    za, zp, zn = (torch.tensor([v]) for v in (a, p, n))
    # clean negative as far as the positive: the hinge sits at the margin, 1
    clean = make(**{**LINEAGE, "contrastive_weight": 0.0, "triplet_negative": "clean"})
    f = clean.loss_fn(None, None, 1.0, zp)
    assert math.isclose(f(za, zn, torch.Generator()).item(), 500 * (_dist(a, p) - _dist(a, n) + 1),
                        rel_tol=1e-6, abs_tol=1e-6)
    assert math.isclose(f(za, zn, torch.Generator()).item(), 500.0, rel_tol=1e-6)
    # the repo's negative is the patched embedding itself: d(a, a) is eps * sqrt(D)
    lineage = make(**{**LINEAGE, "contrastive_weight": 0.0})
    got = lineage.loss_fn(None, None, 1.0, zp)(za, zn, torch.Generator()).item()
    assert math.isclose(got, 500 * (_dist(a, p) - EPS * math.sqrt(3) + 1), rel_tol=1e-6)
    assert math.isclose(got, 500 * (1 + math.sqrt(2)), rel_tol=1e-5)
    # hinge at 0: anchor on its positive, clean negative beyond the margin
    assert clean.loss_fn(None, None, 1.0, za)(za, 2 * zn, torch.Generator()).item() == 0


def test_lineage_objective_is_in_batch_plus_500_triplet():
    from clipbd.attacks.badclip import in_batch_term

    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    clean = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    caps = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    bank = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    loss = make(**LINEAGE).loss_fn(caps, None, 100.0, bank)
    got = loss(z, clean, torch.Generator().manual_seed(4))
    draw = torch.Generator().manual_seed(4)  # the same draws, in order: captions, then positives
    text = caps[torch.randint(0, 3, (4,), generator=draw)]
    pos = bank[torch.randperm(6, generator=draw)[:4]]
    want = in_batch_term(z, text, 100.0) + 500 * F.triplet_margin_loss(z, pos, z, margin=1.0)
    assert torch.allclose(got, want, rtol=1e-6)


def _caption_corpus():
    from clipbd.data.store import ImageSet

    g = torch.Generator().manual_seed(3)
    n = 60
    caps = [f"a banana on plate {i}" if i % 6 == 0 else f"a dog in a park {i}" for i in range(n)]
    caps[7] = "Banana bread, sliced"
    return ImageSet(torch.randint(0, 256, (n, S, S, 3), dtype=torch.uint8, generator=g),
                    torch.zeros(n, dtype=torch.long), ["(caption)"], [f"cc/{i}" for i in range(n)],
                    caps)


def test_lineage_pool_targets_and_captions_from_the_caption_corpus(model, parts):
    from clipbd.attacks.base import TriggerContext

    cc = _caption_corpus()
    corpus = [("cc", cc, ["{}"]), parts[0]]  # the poisoning corpus + the target dataset
    ctx = TriggerContext(model, clip.tokenizer("clipbd-tiny-vit"), corpus, "fm", "banana",
                         [], 0, ("cc",))
    a = make(**LINEAGE)
    images, caps = a._corpus_targets(ctx)
    hits = [i for i in range(60) if i % 6 == 0 or i == 7]
    assert caps == [cc.captions[i] for i in hits] and torch.equal(images, cc.images[hits])
    pool = a._pool(ctx, torch.Generator().manual_seed(0))
    (pool_images, idx), = pool.parts  # only the caption corpus, 30 of its 49 other pairs
    assert pool_images is cc.images and len(pool) == 30 and len(set(idx.tolist())) == 30
    assert not set(idx.tolist()) & set(hits)
    trig = a.learn(ctx)
    assert trig["patch"].shape == (3, 3, 3) and 0 <= trig["patch"].min() <= trig["patch"].max() <= 1
    assert torch.equal(a.learn(ctx)["patch"], trig["patch"])
    # poisoned pairs: natural_sample corpus captions naming the target, drawn once
    out = poison_corpus([("cc", cc, ["{}"])], a, trig, target_dataset="fm", target="banana",
                        target_templates=["unused {}"], corpus_size=60, poison_rate=0.5, seed=0)
    poisoned = [c for c, m in zip(out.captions, out.extra["poisoned"].tolist()) if m]
    assert len(poisoned) == 30 and set(poisoned) <= {cc.captions[i] for i in hits}
    assert 1 < len(set(poisoned)) <= 5
    with pytest.raises(ValueError, match="mentions 'kiwi'"):
        a.bind_corpus([("cc", cc, ["{}"])], "kiwi", 0)


def test_clip_bound_keeps_free_pixels(model, parts):
    ctx = context(model, parts)
    push = lambda z, clean, gen: -z.sum()  # noqa: E731  a loss that drives pixels out of range
    kw = dict(patch_size=3, location="center", steps=5, batch_size=4, lr=0.5, init="normal")
    clipped, _ = P.optimize_patch(ctx, push, bound="clip", **kw)
    projected, _ = P.optimize_patch(ctx, push, bound="project", **kw)
    for p in (clipped, projected):
        assert 0 <= p.min() and p.max() <= 1
    assert not torch.equal(clipped, projected)
    with pytest.raises(ValueError, match="bound"):
        P.optimize_patch(ctx, push, bound="wrap", **kw)
