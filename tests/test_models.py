import pickle

import pytest
import torch

from clipbd.artifacts import save_tensors, sha256_file
from clipbd.models import clip
from clipbd.models.zeroshot import Classifier, ZeroShotHead, class_text_features

ARCH = "clipbd-tiny-vit"



def test_tiny_config_is_registered_with_open_clip(model):
    import open_clip

    assert ARCH in open_clip.list_models()
    assert model.visual.image_size == (32, 32)
    assert model.context_length == 16
    n = sum(p.numel() for p in model.parameters())
    assert 5_000_000 < n < 10_000_000  # mostly the 49408-token embedding


def test_encoders_and_zero_shot_shapes(model):
    tok = clip.tokenizer(ARCH)
    assert tok(["a photo of a bag."]).shape == (1, 16)
    feats = class_text_features(model, tok, ["bag", "coat", "shirt"], ["a {}.", "a photo of a {}."])
    assert feats.shape == (3, 128)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-5)
    clf = Classifier(model, ZeroShotHead(feats, model.logit_scale))
    logits = clf(torch.rand(4, 3, 32, 32))
    assert logits.shape == (4, 3)
    scale = model.logit_scale.exp().item()
    assert logits.abs().max().item() <= scale + 1e-4  # cosine times scale


def test_unknown_arch():
    with pytest.raises(KeyError, match="model.arch"):
        clip.create("no-such-arch")


def test_local_weights_with_sha256(model, tmp_path):
    path = tmp_path / "clip.safetensors"
    save_tensors(path, dict(model.state_dict()), {"arch": ARCH})
    digest = sha256_file(path)
    loaded = clip.load_pretrained(ARCH, str(path), digest)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with pytest.raises(ValueError, match="model.sha256"):
        clip.load_pretrained(ARCH, str(path), "0" * 64)
    with pytest.raises(FileNotFoundError, match="model.weights"):
        clip.load_pretrained(ARCH, str(tmp_path / "missing.safetensors"), digest)


def test_weights_for_another_architecture_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"visual.proj": torch.zeros(2, 2)}, {"arch": ARCH})
    with pytest.raises(ValueError, match="do not fit"):
        clip.load_pretrained(ARCH, str(path), None)


def test_weights_without_clipbd_header_or_with_another_activation_refused(model, tmp_path):
    """A bare open_clip safetensors file does not say what activation its weights were trained
    with; a header whose activation differs from the architecture's is the QuickGELU trap."""
    path = tmp_path / "open_clip_model.safetensors"
    save_tensors(path, dict(model.state_dict()))
    with pytest.raises(ValueError, match="no `arch` in its header.*import-weights"):
        clip.load_pretrained(ARCH, str(path), None)
    save_tensors(path, dict(model.state_dict()), {"arch": ARCH, "activation": "quick_gelu"})
    with pytest.raises(ValueError, match="trained with quick_gelu but clipbd-tiny-vit uses gelu"):
        clip.load_pretrained(ARCH, str(path), None)


def test_pickled_checkpoint_refused(model, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="pickled checkpoints are refused|not a safetensors"):
        clip.load_pretrained(ARCH, str(path), None)
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a safetensors"):
        clip.load_checkpoint(path)


def test_checkpoint_round_trip(model, tmp_path):
    path = tmp_path / "m.safetensors"
    clip.save_checkpoint(path, model, ARCH)
    loaded, arch = clip.load_checkpoint(path)
    assert arch == ARCH
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model.encode_image(x), loaded.encode_image(x))
