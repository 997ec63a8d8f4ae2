import pytest
import torch

import clipbd.defenses.rvpt  # noqa: F401  (registers "vpt" and "rvpt")
from clipbd import defenses
from clipbd.data.store import ImageSet, to_float
from clipbd.defenses.base import DefenseContext
from clipbd.defenses.rvpt import RVPT, feature_repulsion
from clipbd.defenses.vpt import VPT
from clipbd.evaluate import logits
from clipbd.models import clip
from clipbd.models.visual_prompt import (VisualPrompts, frozen_cls, init_prompts,
                                         prompted_blocks)
from clipbd.models.zeroshot import Classifier, Normalize

ARCH = "clipbd-tiny-vit"
CLASSES = ["circle", "t-shirt", "ankle boot", "horizontal bar"]
VCFG = dict(depth=2, depth_from="output", length=4, init_std=0.02, lr=0.05, momentum=0.9,
            weight_decay=5e-4, batch_size=8, epochs=2, warmup_epochs=0, warmup_lr=1e-5,
            cache_lower=True)
RCFG = dict(VCFG, alpha=2.0, margin=None)



@pytest.fixture(scope="module")
def ctx(model):
    return DefenseContext(model, clip.tokenizer(ARCH), CLASSES, ["a photo of a {}."], seed=0)


def fewshot(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % len(CLASSES), CLASSES, [f"i{i}" for i in range(n)])


def pixels(n=5, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def prompter(model, blocks, length=4, seed=0):
    return VisualPrompts(model.visual, blocks, init_prompts(len(blocks), length, 128, 0.5, seed))


def reference_vpt_deep(visual, x, prompts: dict[int, torch.Tensor]):
    """Independent VPT-deep on open_clip's own embedding and pooling: [cls, prompts, patches]."""
    t = visual._embeds(x)
    b = 0
    for i, blk in enumerate(visual.transformer.resblocks):
        if i in prompts:
            p = prompts[i].expand(len(x), -1, -1)
            t = torch.cat([t[:, :1], p, t[:, 1 + b:]], dim=1)
            b = p.shape[1]
        t = blk(t)
    return visual._pool(t)[0] @ visual.proj


def test_no_prompts_equals_encode_image(model):
    x = pixels()
    blocks = prompted_blocks(3, 0)
    assert blocks == []
    vp = VisualPrompts(model.visual, blocks, torch.zeros(0, 4, 128))
    with torch.no_grad():
        want = model.encode_image(x)
        assert torch.allclose(vp(x), want, atol=1e-6)
        assert torch.allclose(vp.upper(vp.lower(x))[0], want, atol=1e-6)
        assert torch.allclose(frozen_cls(model.visual, x, [])[0], want, atol=1e-6)


@pytest.mark.parametrize("depth_from", ["output", "input"])
def test_prompted_forward_matches_an_independent_vpt_deep(model, depth_from):
    x = pixels()
    blocks = prompted_blocks(3, 2, depth_from)
    vp = prompter(model, blocks)
    with torch.no_grad():
        want = reference_vpt_deep(model.visual, x, {b: vp.prompts[i] for i, b in enumerate(blocks)})
        got = vp(x)
        assert torch.allclose(got, want, atol=1e-6)
        assert (got - model.encode_image(x)).abs().max() > 1e-3  # the prompts do act


def test_per_layer_cls_shapes_and_values(model):
    x = pixels(n=6)
    vp = prompter(model, [1, 2])
    with torch.no_grad():
        feats, cls = vp(x, cls_layers=[0, 1, 2])
        assert feats.shape == (6, 128)
        assert [tuple(c.shape) for c in cls] == [(6, 128)] * 3
        # the last block's CLS is what gets pooled
        assert torch.allclose(model.visual.ln_post(cls[-1]) @ model.visual.proj, feats, atol=1e-6)
        f0, orig = frozen_cls(model.visual, x, [0, 1, 2])
        assert torch.allclose(f0, model.encode_image(x), atol=1e-6)
        assert len(orig) == 3 and orig[0].shape == (6, 128)
        # block 0 is below the prompts: same CLS as the original; blocks 1 and 2 differ
        assert torch.allclose(cls[0], orig[0], atol=1e-6)
        assert (cls[1] - orig[1]).abs().max() > 1e-3
        # the cached path returns the original CLS with prompted=False
        tokens = vp.lower(x)
        _, same = vp.upper(tokens, [1, 2], prompted=False)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(same, orig[1:]))
    with pytest.raises(ValueError, match="below the cached part"):
        vp.upper(tokens, [0])


@pytest.mark.parametrize("n,depth,start,want", [
    (3, 2, "output", [1, 2]), (3, 2, "input", [0, 1]), (3, 3, "output", [0, 1, 2]),
    (3, 3, "input", [0, 1, 2]), (12, 9, "output", list(range(3, 12))),
    (12, 6, "input", list(range(6))), (3, 0, "output", [])])
def test_depth_counted_from_output_or_input(n, depth, start, want):
    assert prompted_blocks(n, depth, start) == want


def test_depth_from_input_changes_block_zero(model):
    x = pixels()
    orig = frozen_cls(model.visual, x, [0, 1, 2])[1]
    with torch.no_grad():
        cls = prompter(model, prompted_blocks(3, 1, "input"))(x, cls_layers=[0, 1, 2])[1]
    assert all((c - o).abs().max() > 1e-3 for c, o in zip(cls, orig))


def test_depth_too_large_names_the_config_key(model, ctx):
    with pytest.raises(ValueError, match=r"`defenses\.rvpt\.depth` = 4 .* 3 transformer blocks"):
        prompted_blocks(3, 4)
    with pytest.raises(ValueError, match="depth_from"):
        prompted_blocks(3, 1, "middle")
    with pytest.raises(ValueError, match=r"defenses\.rvpt\.depth"):
        defenses.get("rvpt", dict(RCFG, depth=4)).fit(ctx, fewshot())
    with pytest.raises(ValueError, match=r"defenses\.vpt\.depth"):
        defenses.get("vpt", dict(VCFG, depth=13)).fit(ctx, fewshot())


def test_cached_lower_layers_equal_the_uncached_path(model, ctx):
    x = pixels(n=7)
    vp = prompter(model, [2])
    with torch.no_grad():
        tokens = vp.lower(x)
        assert tokens.shape == (7, 1 + 16, 128)  # CLS + 4x4 patches, no prompts yet
        a, ca = vp.upper(tokens, cls_layers=[2])
        b, cb = vp(x, cls_layers=[2])
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(ca[0], cb[0], atol=1e-6)
    data = fewshot()
    cached = RVPT(RCFG).fit(ctx, data)
    uncached = RVPT(dict(RCFG, cache_lower=False)).fit(ctx, data)
    assert torch.allclose(cached["prompts"], uncached["prompts"], atol=1e-5)


def test_fit_changes_only_the_prompts(model, ctx):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    d = RVPT(RCFG)
    delta = d.fit(ctx, fewshot())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert set(delta) == {"prompts", "blocks"}
    assert delta["prompts"].shape == (2, 4, 128) and delta["prompts"].dtype == torch.float32
    assert delta["blocks"].tolist() == [1, 2] and delta["blocks"].dtype == torch.int64
    init = init_prompts(2, 4, 128, RCFG["init_std"], ctx.seed)
    assert (delta["prompts"] - init).abs().max() > 1e-4
    assert len(d.losses) == 2 * 2  # 2 epochs x ceil(16 / 8) steps


def test_feature_repulsion_on_hand_made_tensors():
    e = torch.eye(4)
    a = e[:3].unsqueeze(0)  # one layer, three samples
    assert feature_repulsion(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert feature_repulsion(a, -3 * a).item() == pytest.approx(-1.0, abs=1e-6)
    assert feature_repulsion(a, e[1:].unsqueeze(0)).item() == pytest.approx(0.0, abs=1e-6)
    # two layers: sample-wise mean over layers, then over samples
    layer0 = torch.stack([e[0], e[1], e[2]])
    prompted = torch.stack([layer0, layer0])
    original = torch.stack([layer0, torch.stack([-e[0], e[1], e[3]])])  # cos (1,-1), (1,1), (1,0)
    want = (0 + 1 + 0.5) / 3
    assert feature_repulsion(prompted, original).item() == pytest.approx(want, abs=1e-6)
    assert feature_repulsion(list(prompted), list(original)).item() == pytest.approx(0.5, abs=1e-6)
    # margin: per sample max(L_i, m) before the mean
    assert feature_repulsion(prompted, original, 0.25).item() == pytest.approx((0.25 + 1 + 0.5) / 3)
    assert feature_repulsion(prompted, original, 1.0).item() == pytest.approx(1.0)
    assert feature_repulsion(prompted, original, -1.0).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="layers, samples, width"):
        feature_repulsion(prompted, original[:, :2])


def test_margin_one_has_no_gradient():
    p = torch.randn(2, 5, 8, requires_grad=True)
    feature_repulsion(p, torch.randn(2, 5, 8), margin=1.0).backward()
    assert torch.equal(p.grad, torch.zeros_like(p))
    q = torch.randn(2, 5, 8, requires_grad=True)
    feature_repulsion(q, torch.randn(2, 5, 8)).backward()
    assert q.grad.abs().max() > 0


def test_vpt_is_rvpt_without_repulsion(ctx):
    data = fewshot()
    vpt = defenses.get("vpt", VCFG).fit(ctx, data)
    assert type(defenses.get("vpt", VCFG)) is VPT
    no_alpha = defenses.get("rvpt", dict(RCFG, alpha=0.0)).fit(ctx, data)
    margin_one = defenses.get("rvpt", dict(RCFG, margin=1.0)).fit(ctx, data)
    rvpt = defenses.get("rvpt", RCFG).fit(ctx, data)
    assert torch.equal(vpt["prompts"], no_alpha["prompts"])
    assert torch.equal(vpt["blocks"], no_alpha["blocks"])
    assert torch.equal(vpt["prompts"], margin_one["prompts"])
    assert (vpt["prompts"] - rvpt["prompts"]).abs().max() > 1e-4


def test_repulsion_lowers_similarity_to_the_original_features(model, ctx):
    data = fewshot()
    x = Normalize(model)(to_float(data.images))
    orig = torch.stack(frozen_cls(model.visual, x, [1, 2])[1]).detach()
    sims = {}
    for name, cfg in [("vpt", VCFG), ("rvpt", dict(RCFG, alpha=5.0))]:
        with torch.no_grad():  # fit trains even when called under no_grad
            delta = defenses.get(name, dict(cfg, epochs=4, lr=0.2)).fit(ctx, data)
            vp = VisualPrompts(model.visual, [1, 2], delta["prompts"])
            sims[name] = feature_repulsion(torch.stack(vp(x, [1, 2])[1]), orig).item()
    assert sims["rvpt"] < sims["vpt"] - 0.05


def test_deterministic_under_a_seed(model, ctx):
    data = fewshot()
    a = RVPT(RCFG).fit(ctx, data)
    b = RVPT(RCFG).fit(ctx, data)
    assert torch.equal(a["prompts"], b["prompts"])
    other = DefenseContext(model, ctx.tokenizer, CLASSES, ctx.templates, seed=1)
    c = RVPT(RCFG).fit(other, data)
    assert (a["prompts"] - c["prompts"]).abs().max() > 1e-4


def test_classifier_composes_model_and_prompts(model, ctx):
    d = RVPT(RCFG)
    delta = d.fit(ctx, fewshot())
    images = fewshot(n=6, seed=3).images
    clf = d.classifier(ctx, delta)
    out = logits(clf, images, batch=4)
    assert out.shape == (6, len(CLASSES))
    x = to_float(images)
    with torch.no_grad():
        vp = VisualPrompts(model.visual, [1, 2], delta["prompts"])
        want = ctx.zero_shot_head()(vp(Normalize(model)(x)))
        plain = Classifier(model, ctx.zero_shot_head())(x)
        keyed = logits(d.classifier(ctx, delta, "sudo "), images, batch=4)
    assert torch.allclose(out, want, atol=1e-5)
    assert (out - plain).abs().max() > 1e-3
    assert (out - keyed).abs().max() > 1e-4  # the text prefix reaches the head
    with pytest.raises(ValueError, match=r"defenses\.rvpt"):
        RVPT(dict(RCFG, depth=1)).classifier(ctx, delta)


def test_augment_trains_on_crops_with_their_own_original_cls(model, ctx):
    """augment: each batch is a fresh crop + flip, and the FR term compares the prompted CLS
    with the original encoder's CLS of that same augmented batch. One step, replayed."""
    import torch.nn.functional as F

    from clipbd.defenses.vpt import CROP_SCALE
    from clipbd.train.augment import crop_flip

    data = fewshot()
    cfg = dict(RCFG, augment=True, epochs=1, batch_size=16)
    d = RVPT(cfg)
    delta = d.fit(ctx, data)
    idx = torch.randperm(16, generator=torch.Generator().manual_seed(ctx.seed))
    crops = crop_flip(to_float(data.images)[idx], torch.Generator().manual_seed(ctx.seed + 1),
                      scale=CROP_SCALE)
    xb = Normalize(model)(crops)
    vp = VisualPrompts(model.visual, [1, 2], init_prompts(2, 4, 128, RCFG["init_std"], ctx.seed))
    with torch.no_grad():
        feats, cls = vp.upper(vp.lower(xb), cls_layers=[1, 2])
        orig = vp.upper(vp.lower(xb), [1, 2], prompted=False)[1]
        want = (F.cross_entropy(ctx.zero_shot_head()(feats), data.labels[idx])
                + d.penalty(torch.stack(cls), torch.stack(orig)))
    assert d.losses[0] == pytest.approx(want.item(), rel=1e-5)
    plain = RVPT(dict(cfg, augment=False))
    plain.fit(ctx, data)
    assert plain.losses[0] != pytest.approx(d.losses[0], rel=1e-3)
    assert torch.equal(RVPT(cfg).fit(ctx, data)["prompts"], delta["prompts"])  # seeded
