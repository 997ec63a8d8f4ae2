"""Execution options (config `accelerator`): environment round trip, device choice, bf16
autocast, torch.compile switch, and what sidecars record. CUDA itself is not available here."""
import json

import pytest
import torch

from clipbd import accel, features
from clipbd.artifacts import save_tensors, sidecar_path, write_sidecar
from clipbd.config import load


@pytest.fixture
def env(monkeypatch):
    for var in accel.ENV.values():
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_config_block_defaults_and_export(env, root):
    cfg = load(root / "config" / "config.yaml")
    assert cfg["accelerator"] == {"device": "auto", "amp": "none", "compile": False}
    accel.export({"device": "cpu", "amp": "bf16", "compile": True})
    assert accel.settings() == {"device": "cpu", "amp": "bf16", "compile": True}
    accel.export(cfg["accelerator"])
    assert accel.settings() == {"device": "auto", "amp": "none", "compile": False}


def test_unset_environment_means_defaults(env):
    assert accel.settings() == accel.DEFAULTS
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert accel.device().type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_forcing_cuda_without_a_gpu_names_the_key(env):
    accel.export({"device": "cuda"})
    with pytest.raises(RuntimeError, match="accelerator.device"):
        accel.device()


def test_bad_value_is_a_config_error(root):
    from clipbd.config import ConfigError

    with pytest.raises(ConfigError, match="bf8"):
        load(root / "config" / "config.yaml", {"accelerator": {"amp": "bf8"}})


def test_bf16_autocast_changes_numerics_a_little_and_returns_float32(env, model):
    images = torch.randint(0, 256, (24, 32, 32, 3), dtype=torch.uint8)
    full = features.encode(model, images, 10)
    accel.export({"amp": "bf16"})
    half = features.encode(model, images, 10)
    assert half.dtype == torch.float32 and half.shape == full.shape == (24, 128)
    assert not torch.equal(half, full)  # autocast really ran in bfloat16
    cos = torch.nn.functional.cosine_similarity(half, full, dim=-1)
    assert cos.min() > 0.99


def test_default_is_bit_identical_to_plain_forward(env, model):
    images = torch.randint(0, 256, (12, 32, 32, 3), dtype=torch.uint8)
    from clipbd.models.zeroshot import Classifier

    enc = Classifier(model, torch.nn.Identity()).eval()
    with torch.no_grad():
        plain = enc.features(images.permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(features.encode(model, images, 12), plain)


def test_compile_switch(env):
    def f(x):
        return x + 1

    assert accel.compiled(f) is f
    accel.export({"compile": True})
    assert accel.compiled(f) is not f


def test_sidecar_records_the_execution(env, tmp_path):
    accel.export({"device": "cpu", "amp": "bf16"})
    out = tmp_path / "t.safetensors"
    save_tensors(out, {"x": torch.zeros(2)})
    write_sidecar(out, step="test", config={}, inputs=[], code="c", seed=0, started=0.0)
    info = json.loads(sidecar_path(out).read_text())["accelerator"]
    assert info["device"] == "cpu" and info["amp"] == "bf16" and info["ran_on"] == "cpu"
    assert info["compile"] is False and info["torch"] == torch.__version__
