"""The supervised track (FST's protocol): victim, poisoning, defenses, FST's penalty."""
from __future__ import annotations

import copy

import pytest
import torch

from clipbd.config import _fill_defaults
from clipbd.data.store import ImageSet
from clipbd.defenses.fst import project_norm, shift_penalty
from clipbd.supervised import attacks, defenses, model as victims
from clipbd.supervised.config import attack_schema
from clipbd.supervised.label_consistent import checkerboard
from clipbd.supervised.poison import poison_train, tuning_indices, victim_indices

CLASSES = [f"c{i}" for i in range(4)]


def images(n: int = 40, size: int = 32, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % len(CLASSES)
    return ImageSet(x, labels, CLASSES, [f"i{k}" for k in range(n)])


def attack(name: str, **over):
    params = {}
    _fill_defaults(params, attack_schema(name))
    params.update(over)
    return attacks.get(name, params, 32)


TUNE = {"lr": 0.05, "epochs": 1, "batch_size": 8, "momentum": 0.9, "weight_decay": 0.0,
        "augment": False, "project_norm": True}


@pytest.fixture(scope="module")
def victim():
    torch.manual_seed(0)
    return victims.build("resnet18", len(CLASSES)).eval()


def test_victim_is_torchvision_resnet18_without_weights():
    m = victims.build("resnet18", 7)
    assert m.fc.out_features == 7 and m.conv1.kernel_size == (7, 7)
    small = victims.build("resnet18", 7, "cifar")
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, torch.nn.Identity)
    assert sum(p.numel() for p in m.parameters()) == 11_180_103


def test_victim_training_steps_change_weights(victim):
    from clipbd.train.optim import make_optimizer
    from clipbd.train.supervised import tune

    model = copy.deepcopy(victim)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model.named_parameters(), "sgd", 0.05, 5e-4, 0.9)
    losses = tune(model, images(16), opt, lr=0.05, epochs=1, batch_size=8, seed=0)
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    after = model.state_dict()
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])


def test_poison_label_attack_relabels_non_target_images():
    data = images(40)
    bad = poison_train(data, attack("badnet", location="corner"), attack("badnet").make_trigger(0),
                       0.1, target=2, clean_label=False, seed=0)
    mask = bad.extra["poisoned"]
    assert int(mask.sum()) == 4
    assert (data.labels[mask] != 2).all() and (bad.labels[mask] == 2).all()
    assert torch.equal(bad.labels[~mask], data.labels[~mask])
    assert torch.equal(bad.images[~mask], data.images[~mask])
    assert not torch.equal(bad.images[mask], data.images[mask])


def test_label_consistent_touches_only_target_images_and_keeps_labels():
    data = images(40)
    lc = attack("lc", eps=8 / 255, pgd_steps=2, surrogate_epochs=1)
    bad = poison_train(data, lc, lc.make_trigger(0), 0.2, target=1, clean_label=True, seed=0)
    mask = bad.extra["poisoned"]
    assert int(mask.sum()) == 8 and (data.labels[mask] == 1).all()  # 10 target images
    assert torch.equal(bad.labels, data.labels)
    assert torch.equal(bad.images[~mask], data.images[~mask])
    corner = bad.images[mask][:, :3, :3, 0].float() / 255
    assert torch.equal(corner, checkerboard(3).expand_as(corner))  # all four corners
    assert torch.equal(bad.images[mask][:, -3:, -3:, 1].float() / 255,
                       checkerboard(3).expand(8, 3, 3))
    middle = (bad.images[mask][:, 8:24, 8:24].int() - data.images[mask][:, 8:24, 8:24].int())
    assert 0 < middle.abs().max() <= 9  # PGD: at most eps = 8/255 (+ rounding)
    with pytest.raises(ValueError, match="target-class"):
        poison_train(data, lc, lc.make_trigger(0), 0.5, target=1, clean_label=True, seed=0)


def test_sig_is_clean_label_and_wanet_adds_cross_images():
    assert "sig" in attacks.CLEAN_LABEL and "badnet" not in attacks.CLEAN_LABEL
    data = images(40)
    wanet = attack("wanet", k=4, s=1.0)
    assert wanet.cfg["cross_ratio"] == 2.0
    bad = poison_train(data, wanet, wanet.make_trigger(0), 0.1, 0, False, seed=0)
    cross = bad.extra["cross"]
    assert int(cross.sum()) == 8 and not (cross & bad.extra["poisoned"]).any()
    assert torch.equal(bad.labels[cross], data.labels[cross])


def test_draws_are_seeded_subsets():
    a = victim_indices(100, 30, 0)
    assert torch.equal(a, victim_indices(100, 30, 0)) and len(a.unique()) == 30
    assert not torch.equal(a, victim_indices(100, 30, 1))
    assert len(victim_indices(100, None, 0)) == 100
    assert len(tuning_indices(300, 0.02, 0)) == 6


def test_fst_penalty_and_projection_on_hand_made_tensors():
    w = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    w_ori = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    assert shift_penalty(w, w_ori, 0.5).item() == pytest.approx(0.5 * (3.0 + 2.0))
    p = project_norm(w, torch.tensor(10.0))
    assert p.norm().item() == pytest.approx(10.0) and torch.allclose(p, w * 2)


def _changed(victim, delta):
    own = victim.state_dict()
    return {k for k, v in delta.items() if not torch.equal(v, own[k])}


@pytest.mark.parametrize("name", ["ft", "lp", "fe_tuning", "ft_init", "fst"])
def test_each_defense_touches_exactly_its_parameters(victim, name):
    data = images(16)
    cfg = {**TUNE, **({"alpha": 0.2} if name == "fst" else {})}
    delta = defenses.get(name, cfg).fit(victim, data, seed=0)
    params = {n for n, _ in victim.named_parameters()}
    changed = _changed(victim, delta) & params
    head = {"fc.weight", "fc.bias"}
    if name == "lp":
        assert set(delta) == head and changed == head  # features (and BN stats) untouched
    else:
        assert set(delta) == set(victim.state_dict())
        assert changed == params  # everything moved (fe_tuning: head by the re-init only)
    if name == "fe_tuning":
        g = torch.Generator().manual_seed(0)
        fresh = torch.nn.Linear(512, len(CLASSES))
        from clipbd.supervised.defenses.base import reset_head

        reset_head(fresh, g)
        assert torch.equal(delta["fc.weight"], fresh.weight)  # re-initialized, then frozen
        assert torch.equal(delta["fc.bias"], fresh.bias)
    if name in ("fst", "ft_init", "lp", "ft"):  # norm projection (FST-code: every mode)
        assert delta["fc.weight"].norm().item() == pytest.approx(
            victim.fc.weight.norm().item(), rel=1e-5)


def test_fst_alpha_pushes_head_away_from_the_original(victim):
    data = images(16)
    cos = {}
    for alpha in (0.0, 5.0):
        delta = defenses.get("fst", {**TUNE, "epochs": 3, "alpha": alpha}).fit(victim, data, 0)
        w, w0 = delta["fc.weight"].flatten(), victim.fc.weight.flatten()
        cos[alpha] = torch.nn.functional.cosine_similarity(w, w0, dim=0).item()
    assert cos[5.0] < cos[0.0] - 0.1


def test_with_delta_and_checkpoint_round_trip(tmp_path, victim):
    path = tmp_path / "model.safetensors"
    victims.save(path, victim, "resnet18", "imagenet", len(CLASSES))
    loaded, meta = victims.load(path)
    assert meta["stem"] == "imagenet"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), victim(x))
    delta = {"fc.bias": torch.ones(len(CLASSES))}
    assert torch.equal(victims.with_delta(copy.deepcopy(victim), delta).fc.bias, delta["fc.bias"])
    with pytest.raises(ValueError, match="unknown"):
        victims.with_delta(copy.deepcopy(victim), {"nope": torch.ones(1)})
