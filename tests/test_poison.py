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
    assert again.ids == out.ids and torch.equal(again.images, out.images)


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
