import pytest
import torch

from clipbd.data.fewshot import sample

LABELS = torch.arange(10).repeat_interleave(30)[
    torch.randperm(300, generator=torch.Generator().manual_seed(0))]


def test_exactly_k_per_class_and_sorted():
    idx = sample(LABELS, 4, seed=0, n_classes=10)
    assert len(idx) == 40 and idx == sorted(idx) and len(set(idx)) == 40
    assert torch.bincount(LABELS[idx], minlength=10).tolist() == [4] * 10


def test_seeded():
    assert sample(LABELS, 4, 0, 10) == sample(LABELS, 4, 0, 10)
    assert sample(LABELS, 4, 0, 10) != sample(LABELS, 4, 1, 10)


def test_excluding_a_class_keeps_the_others():
    full = sample(LABELS, 2, 3, 10)
    wo = sample(LABELS, 2, 3, 10, exclude=[7])
    assert set(wo) == {i for i in full if LABELS[i] != 7}


@pytest.mark.parametrize("shots", [0, -1])
def test_non_positive_shots_refused(shots):
    with pytest.raises(ValueError, match="shots must be positive"):
        sample(LABELS, shots, 0, 10)


def test_too_few_images():
    with pytest.raises(ValueError, match="fewer than shots=31"):
        sample(LABELS, 31, 0, 10)


def test_tuning_set_without_target_class():
    from clipbd.data.store import ImageSet
    from clipbd.verbs.defend import tuning_set

    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    data = ImageSet(torch.zeros(6, 4, 4, 3, dtype=torch.uint8), labels, ["a", "b", "c"],
                    [f"i{k}" for k in range(6)])
    cfg = {"dataset": "d", "datasets": {"d": {"target": "c"}},
           "params": {"without_target_class": True}}
    sub = tuning_set(cfg, data, [0, 1, 2, 5])
    assert sub.ids == ["i0", "i1"] and sub.labels.tolist() == [0, 1]
    cfg["params"]["without_target_class"] = False
    assert tuning_set(cfg, data, [0, 1, 2, 5]).ids == ["i0", "i1", "i2", "i5"]
