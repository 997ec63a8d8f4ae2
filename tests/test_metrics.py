import pytest
import torch

from clipbd.metrics import backdoor_metrics

# 5 test images, classes 0..2, target class 2.
LABELS = torch.tensor([0, 1, 2, 0, 1])


def onehot(pred, n=3):
    return torch.nn.functional.one_hot(torch.tensor(pred), n).float()


def test_metric_definitions_on_hand_made_logits():
    clean = onehot([0, 1, 2, 1, 1])  # 4 of 5 right
    trig = onehot([2, 2, 2, 0, 1])  # non-target images (0,1,3,4): 2 of 4 -> target
    m = backdoor_metrics(clean, LABELS, trig, target=2)
    assert m["ca"] == pytest.approx(0.8)
    assert m["asr"] == pytest.approx(0.5)  # target-class image excluded
    assert m["asr_all"] == pytest.approx(0.6)  # 3 of 5 predicted as target
    assert m["pa"] == pytest.approx(0.6)  # images 2, 3, 4 keep their true label


def test_clean_model_has_no_asr():
    m = backdoor_metrics(onehot([0, 1, 2, 0, 1]), LABELS, None, target=2)
    assert m == {"ca": 1.0, "asr": None, "asr_all": None, "pa": None}


def test_asr_undefined_when_only_target_images():
    labels = torch.tensor([2, 2])
    with pytest.raises(ValueError, match="target class"):
        backdoor_metrics(onehot([2, 2]), labels, onehot([2, 2]), target=2)


def test_attack_success_excludes_target_images():
    from clipbd.metrics import attack_success

    # non-target images 0,1,3,4 -> predicted 2,0,2,2: 3 of 4; the target image (2) is ignored
    assert attack_success(onehot([2, 0, 0, 2, 2]), LABELS, target=2) == pytest.approx(0.75)
    assert attack_success(onehot([0, 1, 2, 0, 1]), LABELS, target=2) == 0.0
