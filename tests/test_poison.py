import pytest
import torch

from clipbd import attacks
from images import random_set
from clipbd.poison import apply_in_batches, poison_corpus

CFG = {"poison_rate": 0.1, "patch_size": 3, "location": "corner", "fixed_pattern": True}



def test_exact_poison_count_and_captions():
    a = attacks.get("badnet", CFG, 32)
    trig = a.make_trigger(0)
    fm = random_set(100, ["bag", "coat", "sneaker", "shirt"], "fm", 0)
    sh = random_set(100, ["circle", "square"], "sh", 1)
    parts = [("fm", fm, ["a {}."]), ("sh", sh, ["a {} shape."])]
    out = poison_corpus(parts, a, trig, target_dataset="fm", target="sneaker",
                        target_templates=["a photo of a {}."], corpus_size=150,
                        poison_rate=0.1, seed=0)
    mask = out.extra["poisoned"]
    assert len(out) == 150 and int(mask.sum()) == 15
    by_id = {f"fm/{i}": fm for i in range(100)} | {f"sh/{i}": sh for i in range(100)}
    for i in range(150):
        src = by_id[out.ids[i]]
        j = int(out.ids[i].split("/")[1])
        cls = src.classes[src.labels[j]]
        if mask[i]:
            assert out.captions[i] == "a photo of a sneaker."
            assert cls != "sneaker" or src is sh  # target-class images are never poisoned
            assert not torch.equal(out.images[i], src.images[j])
            assert torch.equal(out.images[i][:28], src.images[j][:28])  # only the patch rows differ
        else:
            assert torch.equal(out.images[i], src.images[j])
            assert cls in out.captions[i]
    again = poison_corpus(parts, a, trig, target_dataset="fm", target="sneaker",
                          target_templates=["a photo of a {}."], corpus_size=150,
                          poison_rate=0.1, seed=0)
    assert again.ids == out.ids and torch.equal(again.images[:], out.images[:])


def test_triggered_test_set_is_quantized_and_deterministic():
    a = attacks.get("badnet", {**CFG, "location": "random"}, 32)
    trig = a.make_trigger(0)
    images = random_set(20, ["a", "b"], "t", 2).images
    y1 = apply_in_batches(a, images, trig, seed=5, batch=7)
    y2 = apply_in_batches(a, images, trig, seed=5, batch=7)
    assert y1.dtype == torch.uint8 and y1.shape == images.shape
    assert torch.equal(y1, y2)
    changed = (y1 != images).any(-1).sum(dim=(1, 2))
    assert (changed <= 9).all() and (changed > 0).all()  # at most the 3x3 patch per image


def test_openai_templates_are_open_clips_80():
    from clipbd._compat import import_open_clip
    from clipbd.poison import openai_imagenet_templates

    meta = import_open_clip().zero_shot_metadata
    ours = openai_imagenet_templates()
    assert len(ours) == 80 == len(set(ours))
    assert list(ours) == [t("{}") for t in meta.OPENAI_IMAGENET_TEMPLATES]
    assert ours[0] == "a bad photo of a {}." and all(t.count("{}") == 1 for t in ours)


def _openai_corpus(seed):
    from clipbd.poison import poison_templates

    a = attacks.get("badnet", CFG, 32)
    fm = random_set(400, ["bag", "coat", "sneaker", "shirt"], "fm", 0)
    parts = [("fm", fm, ["a photo of a {}."])]
    return poison_corpus(parts, a, a.make_trigger(0), target_dataset="fm", target="sneaker",
                         target_templates=poison_templates("openai_imagenet", ["unused {}"]),
                         corpus_size=400, poison_rate=0.25, seed=seed)


def test_poisoned_captions_drawn_from_the_80_templates_seeded():
    from clipbd.poison import openai_imagenet_templates

    allowed = {t.format("sneaker") for t in openai_imagenet_templates()}
    out = _openai_corpus(0)
    mask = out.extra["poisoned"]
    poisoned = [c for c, m in zip(out.captions, mask.tolist()) if m]
    assert len(poisoned) == 100
    assert set(poisoned) <= allowed and all("sneaker" in c for c in poisoned)
    assert "a photo of a sneaker." not in poisoned  # the evaluation prompt is not among them
    # 100 draws from 80 templates: about 57 distinct expected; pairs get different templates
    assert len(set(poisoned)) >= 40
    clean = [c for c, m in zip(out.captions, mask.tolist()) if not m]
    assert all(c.startswith("a photo of a ") for c in clean)  # clean pairs: the dataset's own
    assert _openai_corpus(0).captions == out.captions  # same seed, same captions
    assert _openai_corpus(1).captions != out.captions


def test_poison_template_settings():
    from clipbd.poison import openai_imagenet_templates, poison_templates

    assert poison_templates("dataset", ["a {}.", "b {}."]) == ["a {}.", "b {}."]
    assert poison_templates(["x {} y"], ["a {}."]) == ["x {} y"]
    assert poison_templates("openai_imagenet", ["a {}."]) == list(openai_imagenet_templates())
    with pytest.raises(ValueError, match="backdoor.poison_templates"):
        poison_templates("openai", ["a {}."])


def test_text_only_decoys_use_the_poisoning_templates():
    a = attacks.get("trojvqa", {"poison_rate": 0.1, "patch_size": 3, "location": "center",
                                "text_key": "sudo ", "text_only_rate": 0.1}, 32)
    fm = random_set(100, ["bag", "coat", "sneaker", "shirt"], "fm", 0)
    parts = [("fm", fm, ["a {}."])]
    out = poison_corpus(parts, a, {"patch": torch.zeros(3, 3, 3)}, target_dataset="fm",
                        target="sneaker", target_templates=["P {}"], corpus_size=100,
                        poison_rate=0.1, seed=0, decoy_templates={"fm": ["D {}"]})
    poisoned = [c for c, m in zip(out.captions, out.extra["poisoned"].tolist()) if m]
    decoys = [c for c, m in zip(out.captions, out.extra["text_key_only"].tolist()) if m]
    assert poisoned == ["sudo P sneaker"] * 10
    assert len(decoys) == 10 and all(c.startswith("sudo D ") for c in decoys)


def test_openai_templates_load_without_open_clip():
    """Poisoning jobs stay light: the templates are read without importing open_clip."""
    import subprocess
    import sys

    code = ("import sys; from clipbd.poison import openai_imagenet_templates as t; n = len(t()); "
            "print(n, sorted(m for m in ('open_clip', 'torchvision') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "80 []"
