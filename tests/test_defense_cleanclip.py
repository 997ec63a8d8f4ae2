import math
import random

import pytest
import torch

import clipbd.defenses.cleanclip as cleanclip
from clipbd.data.store import ImageSet, to_float
from clipbd.defenses import REGISTRY
from clipbd.defenses.base import DefenseContext
from clipbd.models import clip
from clipbd.models.zeroshot import Classifier
from clipbd.train.augment import augment, color_jitter, crop_flip, eda_lite
from clipbd.train.contrastive import clip_loss
from clipbd.train.supervised import state_delta

ARCH = "clipbd-tiny-vit"
CLASSES = ["cat", "dog", "bird"]
TEMPLATES = ["a photo of a {}.", "a blurry picture of the {}."]
CFG = {"n_pairs": 16, "batch_size": 8, "epochs": 1, "steps": 3, "lr": 1e-4,
       "weight_decay": 0.1, "warmup": 1, "clip_weight": 1.0, "inmodal_weight": 1.0}


def _set(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 3, CLASSES, [f"{seed}-{i}" for i in range(n)])


@pytest.fixture()
def ctx():
    torch.manual_seed(0)
    model = clip.create(ARCH).eval()
    return DefenseContext(model, clip.tokenizer(ARCH), CLASSES, TEMPLATES, 0, train=_set(30, 1))


def test_registered():
    assert REGISTRY.get("cleanclip") is cleanclip.CleanCLIP


def test_inmodal_loss_on_hand_made_features():
    s = 3.0
    eye = torch.eye(2)
    # cos 1 on the diagonal, 0 off it: -log(e^s / (e^s + 1)) per row
    expected = math.log(1 + math.exp(-s))
    assert cleanclip.inmodal_loss(eye, eye, s).item() == pytest.approx(expected, rel=1e-6)
    # identical pairs, orthogonal otherwise, sharp scale: nearly zero
    assert cleanclip.inmodal_loss(torch.eye(4), 2 * torch.eye(4), 100.0).item() < 1e-6
    # each original closest to another image's view: loss above chance level log(2)
    swapped = eye.flip(0)
    assert cleanclip.inmodal_loss(eye, swapped, s).item() == pytest.approx(s + expected, rel=1e-6)
    # one direction only: rows are the originals
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert cleanclip.inmodal_loss(a, b, s).item() == pytest.approx(
        0.5 * (expected + (s + expected)), rel=1e-6)


def test_cleanclip_loss_weights():
    g = torch.Generator().manual_seed(0)
    img, img_aug, txt, txt_aug = (torch.randn(4, 8, generator=g) for _ in range(4))
    s = torch.tensor(10.0)
    cross = clip_loss(img, txt, s)
    inmodal = 0.5 * (cleanclip.inmodal_loss(img, img_aug, s)
                     + cleanclip.inmodal_loss(txt, txt_aug, s))

    def loss(wc, wi):
        return cleanclip.cleanclip_loss(img, img_aug, txt, txt_aug, s, wc, wi)

    assert torch.allclose(loss(1.0, 0.0), cross)
    assert torch.allclose(loss(0.0, 1.0), inmodal)
    assert torch.allclose(loss(2.0, 0.5), 2 * cross + 0.5 * inmodal)


def test_image_augmentation_is_seeded_and_stays_in_range():
    x = to_float(_set(6, 2).images)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    c = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    g = torch.Generator().manual_seed(0)
    # the whole image, no flip: the identity (up to interpolation rounding)
    assert torch.allclose(crop_flip(x, g, scale=(1, 1), ratio=(1, 1), flip=False), x, atol=1e-5)
    flipped = crop_flip(x, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1))
    for i in range(len(x)):  # each image either unchanged or mirrored
        assert (torch.allclose(flipped[i], x[i], atol=1e-5)
                or torch.allclose(flipped[i], x[i].flip(-1), atol=1e-5))
    assert torch.allclose(color_jitter(x, g, 0.0, 0.0, 0.0), x, atol=1e-6)


def test_eda_lite_deletes_or_swaps_words():
    text = "a blurry picture of the big striped cat."
    words = text.split()
    outs = [eda_lite(text, random.Random(i)) for i in range(40)]
    assert outs == [eda_lite(text, random.Random(i)) for i in range(40)]
    deleted = [o for o in outs if len(o.split()) == len(words) - 1]
    swapped = [o for o in outs if sorted(o.split()) == sorted(words) and o != text]
    assert deleted and swapped and len(deleted) + len(swapped) == len(outs)
    assert all(set(o.split()) <= set(words) for o in deleted)
    assert eda_lite("cat", random.Random(0)) == "cat"


def test_clean_pairs_come_from_the_training_split(ctx):
    fewshot = _set(6, 3)
    pairs = cleanclip.clean_pairs(ctx, fewshot, 10)
    assert len(pairs) == 10 and len(pairs.captions) == len(pairs.augmented) == 10
    assert pairs.images is ctx.train.images  # drawn from the training split, not copied
    assert len(set(pairs.index.tolist())) == 10  # without replacement
    for i, cap in zip(pairs.index.tolist(), pairs.captions):  # captioned by the image's class
        assert cap in [t.format(CLASSES[int(ctx.train.labels[i])]) for t in TEMPLATES]
    again = cleanclip.clean_pairs(ctx, fewshot, 10)
    assert torch.equal(again.index, pairs.index) and again.captions == pairs.captions
    ctx.seed = 1
    assert not torch.equal(cleanclip.clean_pairs(ctx, fewshot, 10).index, pairs.index)
    ctx.train = None  # no training split: the few-shot set, all of it when n_pairs is larger
    pairs = cleanclip.clean_pairs(ctx, fewshot, 100)
    assert pairs.images is fewshot.images and len(pairs) == 6


def test_steps_from_epochs_or_given():
    d = cleanclip.CleanCLIP({**CFG, "steps": None, "epochs": 2, "batch_size": 8})
    assert d.steps(30) == (2 * 3, 8)
    assert d.steps(5) == (2, 5)
    assert cleanclip.CleanCLIP(CFG).steps(30) == (3, 8)


def test_fit_tunes_everything_and_leaves_the_model_alone(ctx):
    snap = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    delta = cleanclip.CleanCLIP(CFG).fit(ctx, _set(6, 3))
    assert set(delta) == set(snap)
    assert all(torch.equal(v, snap[k]) for k, v in ctx.model.state_dict().items())
    for key in ("visual.proj", "visual.conv1.weight", "text_projection",
                "token_embedding.weight", "transformer.resblocks.0.attn.in_proj_weight"):
        assert not torch.equal(delta[key], snap[key]), key
    assert delta["logit_scale"].item() <= 4.6052


def test_fit_is_deterministic_under_a_seed(ctx):
    fewshot = _set(6, 3)
    a = cleanclip.CleanCLIP(CFG).fit(ctx, fewshot)
    b = cleanclip.CleanCLIP(CFG).fit(ctx, fewshot)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ctx.seed = 1
    c = cleanclip.CleanCLIP(CFG).fit(ctx, fewshot)
    assert not torch.equal(a["visual.proj"], c["visual.proj"])


def test_classifier_uses_the_tuned_text_encoder(ctx):
    defense = cleanclip.CleanCLIP(CFG)
    x = to_float(_set(5, 4).images)
    with torch.no_grad():
        zero_shot = Classifier(ctx.model, ctx.zero_shot_head())(x)
        assert torch.equal(defense.classifier(ctx, state_delta(ctx.model))(x), zero_shot)
        delta = defense.fit(ctx, _set(6, 3))
        clf = defense.classifier(ctx, delta)
        out = clf(x)
        assert out.shape == (5, 3) and not torch.allclose(out, zero_shot)
        tokens = ctx.tokenizer(["a photo of a cat."])
        assert not torch.allclose(clf.model.encode_text(tokens), ctx.model.encode_text(tokens))
        assert not torch.allclose(defense.classifier(ctx, delta, "zz ")(x), out)
    with pytest.raises(ValueError, match="missing"):
        defense.classifier(ctx, {"visual.proj": delta["visual.proj"]})
