import pytest
import torch

from clipbd.data.fewshot import sample

LABELS = torch.arange(10).repeat_interleave(30)[torch.randperm(300, generator=torch.Generator().manual_seed(0))]


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
