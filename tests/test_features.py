"""The feature cache: evaluating a text-side defense from cached features gives the same metrics
as encoding the images in the job; image-side defenses never read the cache."""
import json

import pytest
import torch

from clipbd import attacks, defenses, features
from clipbd.verbs import evaluate as evaluate_verb
from clipbd.artifacts import read_json, save_tensors
from clipbd.data.fashion_mnist import CLASSES
from clipbd.data.store import save_split
from clipbd.models import clip
from clipbd.poison import apply_in_batches
from images import random_set

ARCH = "clipbd-tiny-vit"
DS = {"kind": "fashion_mnist", "target": "sneaker",
      "templates": ["a photo of a {}.", "a {} on a black background."]}


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("feat")
    clip.save_checkpoint(d / "model.safetensors", model, ARCH)
    test = random_set(60, list(CLASSES), "test", seed=1)
    save_split(d / "test.safetensors", test)
    attack = attacks.get("badnet", {"poison_rate": 0.05, "patch_size": 3, "location": "corner",
                                    "fixed_pattern": True}, 32)
    trig = test.subset(list(range(len(test))))
    trig.images = apply_in_batches(attack, test.images, attack.make_trigger(0), 0)
    save_split(d / "poisoned.safetensors", trig, {"text_prefix": "sudo "})
    cfg = {"eval_batch_size": 16}
    features.write(cfg, str(d / "model.safetensors"), str(d / "test.safetensors"),
                   str(d / "poisoned.safetensors"), str(d / "features.safetensors"), "c0de")
    return d


def run_cfg(defense, params):
    return {"dataset": "fm", "datasets": {"fm": DS}, "defense": defense, "params": params,
            "run_seed": 0, "eval_batch_size": 16, "row": {"defense": defense}}


def test_cache_holds_both_sets_and_a_sidecar(files, model):
    feats = features.load(str(files / "features.safetensors"))
    assert set(feats) == {"clean", "triggered"}
    assert feats["clean"].shape == feats["triggered"].shape == (60, model.visual.output_dim)
    assert not torch.equal(feats["clean"], feats["triggered"])
    side = read_json(files / "features.safetensors.json")
    assert side["step"] == "features" and side["n"] == {"clean": 60, "triggered": 60}
    assert set(side["inputs"]) == {str(files / n) for n in
                                   ("model.safetensors", "test.safetensors", "poisoned.safetensors")}


def _evaluate(files, defense, params, delta, cached):
    out = files / f"{defense}-{cached}.json"
    delta_path = ""
    if delta:
        delta_path = str(files / f"{defense}-delta.safetensors")
        save_tensors(delta_path, delta, {"defense": defense})
    evaluate_verb.evaluate(run_cfg(defense, params), str(files / "model.safetensors"), delta_path,
                   str(files / "test.safetensors"), str(files / "poisoned.safetensors"),
                   str(out), "c0de", str(files / "features.safetensors") if cached else "")
    return json.loads(out.read_text())


@pytest.mark.parametrize("defense", ["none", "linear_probe"])
def test_cached_metrics_equal_encoding_in_the_job(files, model, defense):
    d = defenses.get(defense, {})
    assert d.frozen_image
    delta = {}
    if defense == "linear_probe":
        g = torch.Generator().manual_seed(0)
        delta = {"head.weight": torch.randn(10, model.visual.output_dim, generator=g),
                 "head.bias": torch.randn(10, generator=g)}
    plain = _evaluate(files, defense, d.cfg, delta, cached=False)
    cached = _evaluate(files, defense, d.cfg, delta, cached=True)
    for key in ("ca", "asr", "asr_all", "pa", "asr_image_key", "asr_text_key"):
        assert cached["metrics"][key] == plain["metrics"][key], key
    assert str(files / "features.safetensors") in cached["provenance"]["inputs"]
    assert str(files / "features.safetensors") not in plain["provenance"]["inputs"]


def test_cached_logits_are_the_encoder_path(files, model):
    from clipbd.data.store import load_split
    from clipbd.evaluate import logits
    from clipbd.models.zeroshot import Classifier, ZeroShotHead, class_text_features

    tok = clip.tokenizer(ARCH)
    head = ZeroShotHead(class_text_features(model, tok, list(CLASSES), DS["templates"]),
                        model.logit_scale)
    clf = Classifier(model, head)
    test = load_split(files / "test.safetensors")
    cached = features.load(str(files / "features.safetensors"))["clean"]
    assert torch.equal(features.head_logits(clf, cached, 16), logits(clf, test.images, 16))


def test_image_side_defenses_ignore_the_cache():
    assert not defenses.get("vpt", {}).frozen_image
    assert not defenses.get("ft", {}).frozen_image
    assert {n for n in defenses.REGISTRY.names() if defenses.REGISTRY.get(n).frozen_image} == \
        {"none", "coop", "cbpt", "linear_probe"}
