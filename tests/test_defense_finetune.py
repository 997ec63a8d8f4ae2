import math

import pytest
import torch

import clipbd.defenses.finetune as finetune
import clipbd.defenses.fst as fst
from clipbd.data.store import ImageSet, to_float
from clipbd.defenses import REGISTRY
from clipbd.defenses.base import DefenseContext
from clipbd.models import clip
from clipbd.models.zeroshot import Classifier
from clipbd.train.optim import make_optimizer
from clipbd.train.supervised import state_delta, trainable_copy, tune, with_weights

ARCH = "clipbd-tiny-vit"
CLASSES = ["cat", "dog", "bird"]
FT = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "momentum": 0.9, "epochs": 3,
      "batch_size": 4, "augment": True}
FST = {"lr": 0.01, "momentum": 0.9, "epochs": 3, "batch_size": 4, "alpha": 0.2, "augment": True}


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def fewshot():
    n = 12
    return ImageSet(_images(n), torch.arange(n) % 3, CLASSES, [f"i{i}" for i in range(n)])


@pytest.fixture()
def ctx():
    torch.manual_seed(0)
    model = clip.create(ARCH).eval()
    return DefenseContext(model, clip.tokenizer(ARCH), CLASSES, ["a photo of a {}.", "a {}."], 0)


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, snap):
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


def _visual_keys(model):
    return {k for k in model.state_dict() if k.startswith("visual.")}


def test_registered():
    assert REGISTRY.get("ft") is finetune.FineTune
    assert REGISTRY.get("fst") is fst.FeatureShiftTuning


def test_tuning_a_trainable_copy_changes_only_the_visual_side(ctx, fewshot):
    snap = _snapshot(ctx.model)
    model = trainable_copy(ctx.model, ("visual.",))
    clf = Classifier(model, ctx.zero_shot_head())
    opt = make_optimizer(model.named_parameters(), "adamw", 1e-3, 0.1)
    losses = tune(clf, fewshot, opt, lr=1e-3, epochs=2, batch_size=4, seed=0)
    assert len(losses) == 2 * 3 and all(math.isfinite(v) for v in losses)
    assert _unchanged(ctx.model, snap)  # the caller's model is untouched
    after = model.state_dict()
    for k, v in snap.items():
        if k.startswith("visual."):
            continue
        assert torch.equal(after[k], v), k  # text side bit-identical
    changed = [k for k in _visual_keys(ctx.model) if not torch.equal(after[k], snap[k])]
    assert len(changed) == len(_visual_keys(ctx.model))  # every visual tensor trained


def test_ft_delta_is_the_visual_weights_and_fit_leaves_the_model_alone(ctx, fewshot):
    snap = _snapshot(ctx.model)
    delta = finetune.FineTune(FT).fit(ctx, fewshot)
    assert set(delta) == _visual_keys(ctx.model)
    assert _unchanged(ctx.model, snap)
    assert not torch.equal(delta["visual.proj"], snap["visual.proj"])
    assert not torch.equal(delta["visual.conv1.weight"], snap["visual.conv1.weight"])


def test_ft_classifier_composes_the_delta_with_a_copy(ctx, fewshot):
    defense = finetune.FineTune(FT)
    x = to_float(_images(5, seed=1))
    zero_shot = Classifier(ctx.model, ctx.zero_shot_head()).eval()
    with torch.no_grad():
        # the untouched visual weights as a delta give back the zero-shot classifier exactly
        same = defense.classifier(ctx, state_delta(ctx.model, "visual."))(x)
        assert torch.equal(same, zero_shot(x))
        delta = defense.fit(ctx, fewshot)
        clf = defense.classifier(ctx, delta)
        out = clf(x)
        assert out.shape == (5, 3)
        assert not torch.allclose(out, zero_shot(x))
        for k, v in delta.items():
            assert torch.equal(clf.model.state_dict()[k], v)
        assert clf.model is not ctx.model
        # a text key changes only the class prompts, so the logits change with the prefix
        assert not torch.allclose(defense.classifier(ctx, delta, "zz ")(x), out)


def test_ft_learns_the_fewshot_set(ctx, fewshot):
    cfg = {**FT, "epochs": 15, "augment": False}
    defense = finetune.FineTune(cfg)
    with torch.no_grad():
        before = (Classifier(ctx.model, ctx.zero_shot_head())(to_float(fewshot.images))
                  .argmax(1) == fewshot.labels).float().mean().item()
        clf = defense.classifier(ctx, defense.fit(ctx, fewshot))
        after = (clf(to_float(fewshot.images)).argmax(1) == fewshot.labels).float().mean().item()
    assert after == 1.0 and before < 1.0


def test_with_weights_refuses_a_foreign_delta(ctx):
    with pytest.raises(ValueError, match="does not fit"):
        with_weights(ctx.model, {"visual.nope": torch.zeros(1)}, "visual.")
    with pytest.raises(ValueError, match="missing"):
        with_weights(ctx.model, {"visual.proj": ctx.model.visual.proj.detach()}, "visual.")
    bad = {**state_delta(ctx.model, "visual."), "visual.proj": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="shape"):
        with_weights(ctx.model, bad, "visual.")


def test_unknown_optimizer(ctx):
    with pytest.raises(ValueError, match="sgd or adamw"):
        make_optimizer(ctx.model.named_parameters(), "adam", 1e-3)


def test_fst_penalty_and_norm_projection_on_hand_made_tensors():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w_ori = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert fst.shift_penalty(w, w_ori, 0.5).item() == pytest.approx(0.5 * (1 + 4))
    assert fst.shift_penalty(-w_ori, w_ori, 0.2).item() == pytest.approx(-0.4)
    p = fst.project_norm(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), 10.0)
    assert torch.allclose(p, torch.tensor([[6.0, 8.0], [0.0, 0.0]]))
    p = fst.project_norm(w, w_ori.norm())
    assert p.norm().item() == pytest.approx(math.sqrt(2), rel=1e-6)
    assert torch.allclose(p / p.norm(), w / w.norm())


def test_fst_penalty_gradient_grows_with_sqrt_of_the_class_count():
    """At fixed alpha the penalty's gradient on W is alpha * W_ori: Frobenius norm
    alpha * sqrt(C) (unit class rows), while CE's gradient on the cosine head stays under
    scale * sqrt(2) whatever C. So alpha tuned on 10 classes is sqrt(100) = 10x stronger at
    1000, and alpha * sqrt(C) is what transfers (config/README.md)."""
    g = torch.Generator().manual_seed(0)
    dim, scale, batch = 64, 100.0, 32
    feats = torch.randn(batch, dim, generator=g)
    pen, ce = {}, {}
    for c in (10, 100, 1000):
        w_ori = torch.nn.functional.normalize(torch.randn(c, dim, generator=g), dim=-1)
        w = fst.project_norm(torch.randn(c, dim, generator=g), w_ori.norm()).requires_grad_()
        fst.shift_penalty(w, w_ori, 0.2).backward()
        pen[c] = w.grad.norm().item()
        assert torch.equal(w.grad, 0.2 * w_ori)
        head = fst.CosineHead(dim, c, torch.tensor(scale))
        with torch.no_grad():
            head.weight.copy_(w)
            head.bias.zero_()
        labels = torch.randint(0, c, (batch,), generator=g)
        torch.nn.functional.cross_entropy(head(feats), labels).backward()
        ce[c] = head.weight.grad.norm().item()
        assert ce[c] <= scale * math.sqrt(2)
    assert pen[10] == pytest.approx(0.2 * math.sqrt(10), rel=1e-5)
    assert pen[1000] / pen[10] == pytest.approx(10.0, rel=1e-5)
    assert pen[100] / pen[10] == pytest.approx(math.sqrt(10), rel=1e-5)
    # the same pull at 1000 classes as alpha = 0.2 at 10: alpha = 0.02
    w_ori = torch.nn.functional.normalize(torch.randn(1000, dim, generator=g), dim=-1)
    w = torch.zeros(1000, dim, requires_grad=True)
    fst.shift_penalty(w, w_ori, 0.02).backward()
    assert w.grad.norm().item() == pytest.approx(pen[10], rel=1e-5)


def test_fst_head_is_the_zero_shot_classifier_at_w_ori(ctx):
    zs = ctx.zero_shot_head()
    head = fst.CosineHead(128, 3, ctx.model.logit_scale.exp())
    head.load_state_dict({"weight": zs.text_features, "bias": torch.zeros(3)})
    f = torch.randn(4, 128)
    assert torch.allclose(head(f), zs(f), atol=1e-5)
    assert set(head.state_dict()) == {"weight", "bias"}
    head.reset(torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(128)
    assert head.weight.abs().max() <= bound and head.bias.abs().max() <= bound
    assert head.weight.std() > bound / 3  # re-initialized, not zeros


def test_fst_delta_keys_norm_and_untouched_model(ctx, fewshot):
    snap = _snapshot(ctx.model)
    delta = fst.FeatureShiftTuning(FST).fit(ctx, fewshot)
    assert set(delta) == _visual_keys(ctx.model) | {"head.weight", "head.bias"}
    assert _unchanged(ctx.model, snap)
    w_ori = ctx.zero_shot_head().text_features
    assert delta["head.weight"].norm().item() == pytest.approx(w_ori.norm().item(), rel=1e-5)
    assert delta["head.weight"].shape == (3, 128)
    assert not torch.equal(delta["visual.proj"], snap["visual.proj"])


def test_fst_penalty_pushes_the_head_away_from_w_ori(ctx, fewshot):
    w_ori = ctx.zero_shot_head().text_features

    def alignment(alpha):
        delta = fst.FeatureShiftTuning({**FST, "alpha": alpha, "augment": False}).fit(ctx, fewshot)
        return (delta["head.weight"] * w_ori).sum().item()

    assert alignment(5.0) < alignment(0.0) - 0.5
    assert alignment(5.0) < 0


def test_fst_classifier_ignores_the_text_prefix(ctx, fewshot):
    defense = fst.FeatureShiftTuning(FST)
    delta = defense.fit(ctx, fewshot)
    x = to_float(_images(5, seed=1))
    with torch.no_grad():
        out = defense.classifier(ctx, delta)(x)
        assert out.shape == (5, 3)
        assert torch.equal(out, defense.classifier(ctx, delta, "zz ")(x))


@pytest.mark.parametrize("name", ["ft", "fst"])
def test_fit_is_deterministic_under_a_seed(ctx, fewshot, name):
    cls, cfg = {"ft": (finetune.FineTune, FT), "fst": (fst.FeatureShiftTuning, FST)}[name]
    a = cls(cfg).fit(ctx, fewshot)
    b = cls(cfg).fit(ctx, fewshot)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ctx.seed = 1
    c = cls(cfg).fit(ctx, fewshot)
    assert not torch.equal(a["visual.proj"], c["visual.proj"])
