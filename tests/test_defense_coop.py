import pytest
import torch
import torch.nn.functional as F

import clipbd.defenses.coop  # noqa: F401  (registers "coop")
import clipbd.defenses.none  # noqa: F401
from clipbd import defenses
from clipbd.data.store import ImageSet, to_float
from clipbd.defenses.base import DefenseContext
from clipbd.models import clip
from clipbd.models.text_prompt import TextPrompt, n_tokens
from clipbd.models.zeroshot import class_text_features

ARCH = "clipbd-tiny-vit"
CLASSES = ["circle", "t-shirt", "ankle boot", "horizontal bar"]
CFG = dict(n_ctx=4, class_specific=False, init="a photo of a", lr=0.002, momentum=0.9,
           weight_decay=5e-4, batch_size=8, epochs=2, warmup_epochs=1, warmup_lr=1e-5)



@pytest.fixture(scope="module")
def tok():
    return clip.tokenizer(ARCH)


def fewshot(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % len(CLASSES), CLASSES, [f"i{i}" for i in range(n)])


def context(model, tok, seed=0, templates=("a photo of a {}.",)):
    return DefenseContext(model, tok, CLASSES, list(templates), seed)


@pytest.mark.parametrize("class_specific", [False, True])
def test_init_phrase_reproduces_the_hand_crafted_prompt(model, tok, class_specific):
    assert n_tokens(tok, "a photo of a") == 4
    prompt = TextPrompt(model, tok, CLASSES, 4, class_specific, "a photo of a")
    assert prompt.ctx.shape == ((4, 4, 128) if class_specific else (4, 128))
    with torch.no_grad():
        plain = prompt()
        keyed = prompt("sudo ")
    want = class_text_features(model, tok, CLASSES, ["a photo of a {}."])
    assert torch.allclose(plain, want, atol=1e-6)
    raw = F.normalize(model.encode_text(tok([f"a photo of a {c}." for c in CLASSES])), dim=-1)
    assert torch.allclose(plain, raw.detach(), atol=1e-6)
    # the key goes between SOS and the context, exactly as "sudo a photo of a {}." reads
    want_keyed = class_text_features(model, tok, CLASSES, ["a photo of a {}."], "sudo ")
    assert torch.allclose(keyed, want_keyed, atol=1e-6)
    assert (keyed - plain).abs().max() > 1e-3


def test_random_init_when_lengths_differ(model, tok):
    a = TextPrompt(model, tok, CLASSES, 3, False, "a photo of a", torch.Generator().manual_seed(1))
    b = TextPrompt(model, tok, CLASSES, 3, False, "a photo of a", torch.Generator().manual_seed(1))
    c = TextPrompt(model, tok, CLASSES, 3, True, None, torch.Generator().manual_seed(2))
    assert torch.equal(a.ctx, b.ctx) and c.ctx.shape == (4, 3, 128)
    assert 0.015 < a.ctx.std().item() < 0.025 and abs(a.ctx.mean().item()) < 0.005
    assert [n for n, _ in a.named_parameters()] == ["ctx"] and list(a.state_dict()) == ["ctx"]


def test_prompt_longer_than_the_text_context_is_refused(model, tok):
    # SOS + 12 ctx + "t-shirt." (4 tokens) + EOT = 18 > 16
    assert model.context_length == 16
    with pytest.raises(ValueError, match="lower n_ctx"):
        TextPrompt(model, tok, CLASSES, 12, False, None, torch.Generator().manual_seed(0))
    prompt = TextPrompt(model, tok, CLASSES, 8, False, None, torch.Generator().manual_seed(0))
    prompt()  # 1 + 8 + 4 + 1 = 14 fits
    with pytest.raises(ValueError, match="lower n_ctx"):
        prompt("sudo sudo ")  # + 4 key tokens = 18


@pytest.mark.parametrize("class_specific", [False, True])
def test_fit_changes_only_the_prompt(model, tok, class_specific, monkeypatch):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    real = model.encode_image
    monkeypatch.setattr(model, "encode_image", lambda x: calls.append(len(x)) or real(x))
    defense = defenses.get("coop", {**CFG, "class_specific": class_specific})
    delta = defense.fit(context(model, tok), fewshot())
    monkeypatch.undo()
    assert calls == [16]  # the images are encoded once, not once per epoch
    assert list(delta) == ["ctx"]
    assert delta["ctx"].shape == ((4, 4, 128) if class_specific else (4, 128))
    assert delta["ctx"].dtype == torch.float32 and not delta["ctx"].requires_grad
    init = TextPrompt(model, tok, CLASSES, 4, class_specific, "a photo of a").ctx
    assert (delta["ctx"] - init).abs().max() > 0
    assert len(defense.losses) == 2 * 2  # 2 epochs x 2 batches
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.parameters())


def test_fit_is_deterministic_under_a_seed(model, tok):
    a = defenses.get("coop", CFG).fit(context(model, tok, seed=3), fewshot())["ctx"]
    b = defenses.get("coop", CFG).fit(context(model, tok, seed=3), fewshot())["ctx"]
    c = defenses.get("coop", {**CFG, "init": None}).fit(context(model, tok, seed=4), fewshot())
    d = defenses.get("coop", {**CFG, "init": None}).fit(context(model, tok, seed=5), fewshot())
    assert torch.equal(a, b)
    assert not torch.equal(c["ctx"], d["ctx"])


def test_training_reduces_the_loss(model, tok):
    torch.manual_seed(0)
    cfg = {**CFG, "epochs": 20, "warmup_epochs": 0, "lr": 0.05, "batch_size": 16}
    ctx, data = context(model, tok), fewshot()
    defense = defenses.get("coop", cfg)
    delta = defense.fit(ctx, data)

    def full_loss(c):
        logits = defense.classifier(ctx, {"ctx": c})(to_float(data.images))
        return F.cross_entropy(logits, data.labels).item()

    init = TextPrompt(model, tok, CLASSES, 4, False, "a photo of a").ctx.detach()
    assert full_loss(delta["ctx"]) < full_loss(init) - 0.05
    assert defense.losses[-1] < defense.losses[0]


def test_classifier_with_the_init_context_is_the_zero_shot_model(model, tok):
    ctx = context(model, tok)
    init = TextPrompt(model, tok, CLASSES, 4, False, "a photo of a").ctx.detach()
    coop, none = defenses.get("coop", CFG), defenses.get("none", {})
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = coop.classifier(ctx, {"ctx": init})(x)
        assert torch.allclose(got, none.classifier(ctx, {})(x), atol=1e-4)
        keyed = coop.classifier(ctx, {"ctx": init}, "sudo ")(x)
        assert torch.allclose(keyed, none.classifier(ctx, {}, "sudo ")(x), atol=1e-4)
    assert got.shape == (3, 4) and (keyed - got).abs().max() > 1e-3
    with pytest.raises(ValueError, match="expected"):
        coop.classifier(ctx, {"ctx": torch.zeros(3, 4, 128)})  # 3 class contexts for 4 classes
