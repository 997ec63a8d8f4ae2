import math

import pytest
import torch
import torch.nn.functional as F

import clipbd.defenses.cbpt  # noqa: F401  (registers "cbpt")
from clipbd import defenses
from clipbd.data.store import ImageSet
from clipbd.defenses.base import DefenseContext
from clipbd.defenses.cbpt import (apply_trigger, collapse_entropy, invert_trigger,
                                  inversion_loss, key_loss, prompt_loss, trigger_specs)
from clipbd.defenses.coop import image_features
from clipbd.models import clip
from clipbd.models.zeroshot import Classifier

ARCH = "clipbd-tiny-vit"
CLASSES = ["circle", "t-shirt", "ankle boot", "horizontal bar"]
CFG = dict(n_ctx=4, class_specific=True, init="a photo of a", lr=0.002, momentum=0.9,
           weight_decay=5e-4, batch_size=8, epochs=2, warmup_epochs=0, warmup_lr=1e-5,
           clean_weight=1.0, trigger_weight=1.0, text_weight=1.0,
           inversion_steps=3, inversion_lr=0.1, inversion_batch_size=8, inversion_samples=None,
           temperature=0.1, mask_weight=10.0, mask_init=0.1, n_triggers=1,
           global_mask_weight=None, text_key_tokens=None, key_steps=3, key_lr=0.01,
           key_gain=1.5, oracle_trigger=False)



@pytest.fixture(scope="module")
def ctx(model):
    return DefenseContext(model, clip.tokenizer(ARCH), CLASSES,
                          ["a photo of a {}.", "a drawing of a {}."], seed=0)


def fewshot(n=16):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % len(CLASSES), CLASSES, [f"i{i}" for i in range(n)])


def test_apply_trigger():
    x, p = torch.rand(2, 3, 4, 4), torch.rand(3, 4, 4)
    assert torch.equal(apply_trigger(x, torch.zeros(1, 4, 4), p), x)
    assert torch.equal(apply_trigger(x, torch.ones(1, 4, 4), p), p.expand(2, -1, -1, -1))
    half = apply_trigger(x, torch.full((1, 4, 4), 0.5), p)
    assert torch.allclose(half, (x + p) / 2)


def test_inversion_objective_on_hand_made_features():
    e = torch.eye(3)
    n = 4
    collapsed, clean = e[0].expand(n, 3), e[1].expand(n, 3)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # mean 0.25
    # positives cos 1, negatives cos 0, T = 1: -log(e / (3e + 4)) per positive
    got = inversion_loss(collapsed, clean, mask, temperature=1.0, mask_weight=2.0)
    assert got.item() == pytest.approx(math.log(3 * math.e + 4) - 1 + 0.5, rel=1e-6)
    # triggered == clean: every logit equal, so the loss is log(2n - 1) at any temperature
    for t in (0.1, 1.0):
        same = inversion_loss(collapsed, collapsed, mask, t, 0.0)
        assert same.item() == pytest.approx(math.log(2 * n - 1), rel=1e-5)
    # a collapsed trigger far from the clean images scores better than no collapse
    spread = inversion_loss(torch.eye(4), torch.eye(4).roll(1, 0), mask, 0.1, 0.0)
    assert inversion_loss(collapsed, clean, mask, 0.1, 0.0) < spread
    with pytest.raises(ValueError, match="two images"):
        inversion_loss(collapsed[:1], clean[:1], mask, 0.1, 1.0)


def _features(seed, n=6, c=4, d=8):
    g = torch.Generator().manual_seed(seed)
    unit = lambda *s: F.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    return unit(c, d), unit(n, d), unit(n, d), torch.arange(n) % c, unit(c, d)


def test_prompt_loss_terms():
    text, clean, trig, labels, hand = _features(0)
    scale = torch.tensor(math.log(10.0))
    total, parts = prompt_loss(text, clean, trig, labels, hand, scale, 1.0, 0.0, 0.0)
    assert total.item() == pytest.approx(F.cross_entropy(10 * clean @ text.T, labels).item(),
                                         rel=1e-6)
    assert set(parts) == {"clean"}
    total, parts = prompt_loss(text, clean, trig, labels, hand, scale, 1.0, 2.0, 3.0)
    assert set(parts) == {"clean", "trigger", "text"}
    assert parts["trigger"] == pytest.approx(F.cross_entropy(10 * trig @ text.T, labels).item(),
                                             rel=1e-6)
    assert parts["text"] == pytest.approx((1 - (text * hand).sum(-1)).mean().item(), rel=1e-6)
    assert total.item() == pytest.approx(parts["clean"] + 2 * parts["trigger"]
                                         + 3 * parts["text"], rel=1e-6)
    # consistency with the hand-crafted features themselves is zero
    total, parts = prompt_loss(hand, clean, trig, labels, hand, scale, 0.0, 0.0, 5.0)
    assert abs(total.item()) < 1e-6 and parts["text"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="all loss weights"):
        prompt_loss(text, clean, trig, labels, hand, scale, 0.0, 0.0, 0.0)


def test_switching_a_term_off_removes_its_gradient():
    text0, clean, trig0, labels, hand = _features(1)
    scale = torch.tensor(math.log(10.0))

    def grads(weights):
        text, trig = text0.clone().requires_grad_(), trig0.clone().requires_grad_()
        prompt_loss(text, clean, trig, labels, hand, scale, *weights)[0].backward()
        return text.grad, trig.grad

    clean_only, trig_none = grads((1.0, 0.0, 0.0))
    assert trig_none is None
    g_text_off, g_trig = grads((1.0, 1.0, 0.0))
    assert g_trig.abs().sum() > 0 and not torch.allclose(g_text_off, clean_only)
    g_trig_off, trig_none = grads((1.0, 0.0, 4.0))
    assert trig_none is None and not torch.allclose(g_trig_off, clean_only)
    assert torch.allclose(g_trig_off - clean_only, 4.0 * -hand / len(hand), atol=1e-6)


def test_inversion_lowers_its_objective_and_keeps_the_encoder(model):
    data = fewshot(8).images
    clean = image_features(model, data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = {**CFG, "inversion_steps": 15, "inversion_batch_size": 8}
    model.requires_grad_(False)
    try:
        mask, pattern, losses = invert_trigger(model, data, clean, cfg,
                                               torch.Generator().manual_seed(0))
    finally:
        model.requires_grad_(True)
    assert mask.shape == (1, 32, 32) and pattern.shape == (3, 32, 32)
    assert 0 <= mask.min() and mask.max() <= 1 and 0 <= pattern.min() and pattern.max() <= 1
    assert len(losses) == 15 and losses[-1] < losses[0] - 0.01
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _fit(model, ctx, monkeypatch, cfg):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    real = model.encode_image
    monkeypatch.setattr(model, "encode_image", lambda x: calls.append(len(x)) or real(x))
    defense = defenses.get("cbpt", cfg)
    delta = defense.fit(ctx, fewshot())
    monkeypatch.undo()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.parameters())
    return defense, delta, calls


def test_fit_changes_only_the_prompt_and_encodes_images_once(model, ctx, monkeypatch):
    defense, delta, calls = _fit(model, ctx, monkeypatch, CFG)
    # clean features once, one batch per inversion step, triggered features once
    assert calls == [16, 8, 8, 8, 16]
    assert list(delta) == ["ctx", "trigger.mask", "trigger.pattern"]
    assert delta["ctx"].shape == (4, 4, 128)
    assert delta["trigger.mask"].shape == (1, 32, 32)
    assert delta["trigger.pattern"].shape == (3, 32, 32)
    assert 0 < delta["trigger.mask"].min() and delta["trigger.mask"].max() < 1
    assert len(defense.losses) == 4 and len(defense.inversion_losses) == 3
    init = defense.prompt(ctx, torch.Generator()).ctx
    assert (delta["ctx"] - init).abs().max() > 0


def test_without_the_trigger_term_no_inversion_runs(model, ctx, monkeypatch):
    defense, delta, calls = _fit(model, ctx, monkeypatch, {**CFG, "trigger_weight": 0.0})
    assert calls == [16] and defense.inversion_losses == []
    assert torch.equal(delta["trigger.mask"], torch.zeros(1, 32, 32))
    assert delta["ctx"].shape == (4, 4, 128)


def test_fit_is_deterministic_under_a_seed(model, ctx):
    cfg = {**CFG, "inversion_samples": 12}
    a = defenses.get("cbpt", cfg).fit(ctx, fewshot())
    b = defenses.get("cbpt", cfg).fit(ctx, fewshot())
    other = DefenseContext(model, ctx.tokenizer, ctx.classes, ctx.templates, seed=1)
    c = defenses.get("cbpt", cfg).fit(other, fewshot())
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["trigger.pattern"], c["trigger.pattern"])


def test_classifier_uses_the_class_contexts_and_the_key(model, ctx):
    delta = defenses.get("cbpt", CFG).fit(ctx, fewshot())
    defense = defenses.get("cbpt", CFG)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = defense.classifier(ctx, delta)(x)
        keyed = defense.classifier(ctx, delta, "sudo ")(x)
        prompt = defense.prompt(ctx, context=delta["ctx"])
        feats = F.normalize(model.encode_image(Classifier(model, None).normalize(x)), dim=-1)
        want = model.logit_scale.exp() * feats @ prompt().T
    assert plain.shape == (2, 4) and torch.allclose(plain, want, atol=1e-4)
    assert (keyed - plain).abs().max() > 1e-3


def test_trigger_specs():
    assert trigger_specs(CFG) == [(10.0, False)]
    cfg = {**CFG, "mask_weight": [10, 1], "n_triggers": 2, "global_mask_weight": 0.5}
    assert trigger_specs(cfg) == [(10.0, False), (10.0, False), (1.0, False), (1.0, False),
                                  (0.5, True)]


def test_prompt_loss_averages_over_triggered_views():
    text, clean, trig, labels, hand = _features(2)
    scale = torch.tensor(math.log(10.0))
    views = torch.stack([trig, trig.roll(1, 0)], 1)  # [B, 2, D]
    _, parts = prompt_loss(text, clean, views, labels, hand, scale, 0.0, 1.0, 0.0)
    want = F.cross_entropy(10 * torch.cat([trig, trig.roll(1, 0)]) @ text.T,
                           torch.cat([labels, labels]))
    assert parts["trigger"] == pytest.approx(want.item(), rel=1e-6)


def test_several_triggers_and_a_global_mask(model, ctx, monkeypatch):
    cfg = {**CFG, "mask_weight": [10.0, 1.0], "global_mask_weight": 1.0}
    defense, delta, calls = _fit(model, ctx, monkeypatch, cfg)
    # clean once; per trigger 3 inversion batches and the triggered features
    assert calls == [16] + [8, 8, 8, 16] * 3
    assert delta["trigger.mask"].shape == (3, 32, 32)
    assert delta["trigger.pattern"].shape == (3, 3, 32, 32)
    g = delta["trigger.mask"][2]
    assert torch.equal(g, g.flatten()[0].expand(32, 32))  # one blend ratio for all pixels
    assert not torch.equal(delta["trigger.mask"][0], delta["trigger.mask"][0].flatten()[0].expand(32, 32))
    assert len(defense.inversion_losses) == 9


def test_collapse_entropy_and_key_loss_on_hand_made_features():
    text = torch.eye(4)
    scale = torch.tensor(math.log(100.0))
    collapsed = torch.eye(4)[[2, 2, 2]]  # every triggered image on class 2
    assert collapse_entropy(text, collapsed, scale).item() == pytest.approx(0.0, abs=1e-6)
    spread = torch.eye(4)  # one image per class: the mean distribution is uniform
    assert collapse_entropy(text, spread, scale).item() == pytest.approx(math.log(4), rel=1e-4)
    views = torch.stack([collapsed, collapsed], 1)  # [N, V, D] counts every view
    assert collapse_entropy(text, views, scale).item() == pytest.approx(0.0, abs=1e-6)
    labels = torch.tensor([0, 1, 2, 3])
    ce = F.cross_entropy(100 * spread @ text.T, labels).item()
    assert key_loss(text, spread, collapsed, labels, scale).item() == pytest.approx(ce, abs=1e-5)


def test_a_key_tensor_stands_in_for_a_text_prefix(model, ctx):
    prompt = defenses.get("cbpt", CFG).prompt(ctx, torch.Generator().manual_seed(0))
    ids = clip.tokenizer(ARCH)(["sudo"])[0]
    key = model.token_embedding.weight[ids[1:3]].detach()  # "sudo": two BPE tokens after [SOS]
    with torch.no_grad():
        assert torch.allclose(prompt(key=key), prompt("sudo "), atol=1e-5)
        assert (prompt(key=key) - prompt()).abs().max() > 1e-3


def test_the_key_gate(model, ctx, monkeypatch):
    """A key that does not pass `key_gain` leaves the fit bit for bit the key-less one."""
    plain = _fit(model, ctx, monkeypatch, CFG)[1]
    off = _fit(model, ctx, monkeypatch, {**CFG, "text_key_tokens": 2, "key_gain": 1e9})[1]
    on_defense, on, _ = _fit(model, ctx, monkeypatch, {**CFG, "text_key_tokens": 2,
                                                       "key_gain": -1e9})
    assert list(off) == list(plain) and all(torch.equal(off[k], plain[k]) for k in plain)
    assert on["text_key"].shape == (2, 128) and not torch.equal(on["ctx"], plain["ctx"])
    assert len(on_defense.inversion_losses) == 3 + 3  # image trigger steps + key steps


def _corner(images):  # the "real" trigger of the oracle tests: a white 4x4 corner
    out = images.clone()
    out[:, :4, :4] = 255
    return out


def test_the_oracle_trigger_replaces_the_inversion(model, ctx, monkeypatch):
    seen = []
    oracle = DefenseContext(model, ctx.tokenizer, ctx.classes, ctx.templates, seed=0,
                            oracle_trigger=lambda x: seen.append(x) or _corner(x))
    cfg = {**CFG, "oracle_trigger": True, "text_key_tokens": 2, "key_gain": -1e9}
    defense, delta, calls = _fit(model, oracle, monkeypatch, cfg)
    assert len(seen) == 1 and torch.equal(seen[0], fewshot().images)
    assert calls == [16, 16]  # clean, then the real-triggered copies: no inversion, no dummy key
    assert defense.inversion_losses == [] and list(delta) == ["ctx", "trigger.mask",
                                                              "trigger.pattern"]
    assert torch.equal(delta["trigger.mask"], torch.zeros(1, 32, 32))
    plain = _fit(model, ctx, monkeypatch, {**CFG, "trigger_weight": 0.0})[1]
    assert not torch.equal(delta["ctx"], plain["ctx"])
    # a dual-key attack's real text key: the trigger term again, through "sudo [ctx] class."
    keyed = DefenseContext(model, ctx.tokenizer, ctx.classes, ctx.templates, seed=0,
                           oracle_trigger=_corner, oracle_key="sudo ")
    with_key = _fit(model, keyed, monkeypatch, cfg)[1]
    assert "text_key" not in with_key and not torch.equal(with_key["ctx"], delta["ctx"])


def test_the_oracle_needs_a_trigger(model, ctx):
    with pytest.raises(ValueError, match="oracle_trigger: this run has no attack trigger"):
        defenses.get("cbpt", {**CFG, "oracle_trigger": True}).fit(ctx, fewshot())
