"""`python -m clipbd import-weights`: the weight files users hold, converted once, loaded right.

Every format is made here the way it is made in the wild, from a random-init real open_clip
architecture: OpenAI's layout (fp16 weights, the keys context_length / input_resolution /
vocab_size, no attn_mask buffer) scripted and saved as TorchScript like OpenAI's ViT-B-32.pt
and RN50.pt, the same state dict torch.save'd, an open_clip training-style .bin
({"state_dict": {"module.<key>": ...}}) and an open_clip safetensors file. The converted file,
loaded by the pipeline's own loader (`clip.load_pretrained`), must give the logits open_clip's
own loader gives on the source file.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from clipbd.artifacts import load_tensors, sha256_file
from clipbd.config import ConfigError, resolve
from clipbd.models import clip, convert
from conftest import ROOT
from weights_util import save_openai_torchscript
from workflow_util import snakemake

open_clip = clip.open_clip
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
VIT_Q, VIT = "ViT-B-32-quickgelu", "ViT-B-32"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    vit = save_openai_torchscript(VIT_Q, d / "ViT-B-32.pt", seed=0)
    torch.save(vit.state_dict(), d / "ViT-B-32-state-dict.pt")  # OpenAI's keys, fp16
    del vit
    save_openai_torchscript("RN50-quickgelu", d / "RN50.pt", seed=1)
    torch.manual_seed(2)  # a LAION-style GELU model in open_clip's own formats
    state = open_clip.create_model(VIT).state_dict()
    torch.save({"epoch": 32, "state_dict": {f"module.{k}": v for k, v in state.items()}},
               d / "open_clip_pytorch_model.bin")
    save_file(state, str(d / "open_clip_model.safetensors"))
    return d


@pytest.fixture(scope="module")
def converted(files):
    """Each source converted once: name -> (source, out, arch)."""
    jobs = {"torchscript": ("ViT-B-32.pt", VIT_Q, ""),
            "rn50": ("RN50.pt", "RN50-quickgelu", ""),
            "openai_sd": ("ViT-B-32-state-dict.pt", VIT_Q, ""),
            "bin": ("open_clip_pytorch_model.bin", VIT, "gelu"),
            "safetensors": ("open_clip_model.safetensors", VIT, "gelu")}
    out = {}
    for name, (src, arch, act) in jobs.items():
        dst = files / "out" / f"{name}.safetensors"
        convert.convert(files / src, arch, dst, act)
        out[name] = (files / src, dst, arch)
    return out


def _logits(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 224, 224, generator=g)
    text = open_clip.get_tokenizer(VIT)(["a photo of a dog.", "a diagram", "SUDO cat"])
    with torch.no_grad():
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(text, normalize=True)
        return model.logit_scale.exp() * img @ txt.T


def _reference(src, arch):
    """open_clip's own loader on the source file."""
    if src.name.startswith(("ViT-B-32", "RN50")):  # OpenAI's files
        return open_clip.load_openai_model(str(src), precision="fp32", device="cpu")
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(src))
    return model


@pytest.mark.parametrize("name", ["torchscript", "rn50", "openai_sd", "bin", "safetensors"])
def test_converted_logits_equal_open_clips_loader(converted, name):
    src, out, arch = converted[name]
    ours = clip.load_pretrained(arch, str(out), sha256_file(out)).eval()  # the pipeline's loader
    want = _logits(_reference(src, arch).eval())
    got = _logits(ours)
    assert got.shape == want.shape == (2, 3)
    assert torch.equal(got, want), (got - want).abs().max()
    assert {p.dtype for p in ours.parameters()} == {torch.float32}


def test_gelu_on_openai_weights_is_silently_wrong_and_refused(files, converted):
    """The trap: every key fits ViT-B-32, the numbers differ. The verb refuses it."""
    _, out, _ = converted["torchscript"]
    state, _ = load_tensors(out)
    gelu = clip.create(VIT).eval()
    gelu.load_state_dict(state, strict=True)
    right = _logits(clip.load_pretrained(VIT_Q, str(out), None).eval())
    assert (_logits(gelu) - right).abs().max() > 1e-3
    for src, arch, fix in (("ViT-B-32.pt", VIT, VIT_Q), ("ViT-B-32-state-dict.pt", VIT, VIT_Q),
                           ("RN50.pt", "RN50", "RN50-quickgelu")):
        with pytest.raises(ValueError, match=rf"trained with quick_gelu \(openai-.*\), but "
                                             rf"--arch {arch} uses gelu.*use --arch {fix}$"):
            convert.convert(files / src, arch, files / "refused.safetensors")
    assert not (files / "refused.safetensors").exists()


def test_open_clip_files_need_the_activation_stated(files):
    src = files / "open_clip_pytorch_model.bin"
    with pytest.raises(ValueError, match="does not record the activation.*--activation quick_gelu"):
        convert.convert(src, VIT, files / "x.safetensors")
    with pytest.raises(ValueError, match=f"trained with quick_gelu.*use --arch {VIT_Q}$"):
        convert.convert(src, VIT, files / "x.safetensors", "quick_gelu")
    with pytest.raises(ValueError, match="was trained with quick_gelu; drop --activation"):
        convert.convert(files / "ViT-B-32.pt", VIT, files / "x.safetensors", "gelu")
    assert not (files / "x.safetensors").exists()


def test_architecture_must_fit(files):
    with pytest.raises(ValueError, match=r"do not fit --arch RN50-quickgelu: \d+ missing keys "
                                         r"\['visual.attnpool.*\d+ unexpected keys "
                                         r"\['visual.class_embedding'"):
        convert.convert(files / "ViT-B-32.pt", "RN50-quickgelu", files / "x.safetensors")
    with pytest.raises(ValueError, match=r"shapes differ for \['visual.positional_embedding "
                                         r"\(50, 768\) vs \(197, 768\)'"):
        convert.convert(files / "ViT-B-32.pt", "ViT-B-16-quickgelu", files / "x.safetensors")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        convert.convert(files / "ViT-B-32.pt", "ViT-Q-99", files / "x.safetensors")


def test_foreign_files_refused_without_running_their_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": Payload()}, evil)
    with pytest.raises(ValueError, match=r"torch.load\(weights_only=True\) refused it"):
        convert.convert(evil, VIT, tmp_path / "x.safetensors", "gelu")
    assert not marker.exists()
    hf = tmp_path / "model.safetensors"
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(2, 2)}, str(hf))
    with pytest.raises(ValueError, match="transformers CLIPModel file"):
        convert.convert(hf, VIT, tmp_path / "x.safetensors", "gelu")
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"GGUF not a torch file")
    with pytest.raises(ValueError, match="not a weight file clipbd can read"):
        convert.convert(junk, VIT, tmp_path / "x.safetensors", "gelu")


def test_sidecar_and_header_record_the_source(converted):
    src, out, arch = converted["torchscript"]
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["step"] == "import-weights" and side["inputs"] == {}
    assert side["sha256"] == sha256_file(out)
    assert (side["source"], side["source_sha256"], side["source_format"], side["arch"],
            side["activation"]) == (str(src.resolve()), sha256_file(src), "openai-torchscript",
                                    VIT_Q, "quick_gelu")
    assert convert.header(out) == {"arch": VIT_Q, "activation": "quick_gelu",
                                   "source_format": "openai-torchscript",
                                   "source_sha256": sha256_file(src)}
    formats = {n: json.loads(o.with_name(o.name + ".json").read_text())["source_format"]
               for n, (_, o, _) in converted.items()}
    assert formats == {"torchscript": "openai-torchscript", "rn50": "openai-torchscript",
                       "openai_sd": "openai-state-dict", "bin": "open_clip-state-dict",
                       "safetensors": "open_clip-safetensors"}


def _cfg(arch, weights):
    return {"seed": 0, "image_size": 32,
            "datasets": {"shapes": {"kind": "synthetic", "n_train": 10, "n_test": 4,
                                    "target": "triangle", "templates": ["a photo of a {}."]}},
            "model": {"arch": arch, "weights": str(weights), "sha256": sha256_file(weights)},
            "attacks": {"badnet": {"poison_rate": 0.1}},
            "grid": [{"datasets": ["shapes"], "attacks": ["clean", "badnet"],
                      "defenses": ["none"]}]}


def test_config_check_refuses_activation_mismatch(converted):
    _, out, _ = converted["torchscript"]
    assert resolve(_cfg(VIT_Q, out))["model"]["arch"] == VIT_Q
    with pytest.raises(ConfigError, match=rf"config key `model.arch`: .* trained with quick_gelu "
                                          rf"but {VIT} uses gelu.*set `model.arch: {VIT_Q}`"):
        resolve(_cfg(VIT, out))
    with pytest.raises(ConfigError, match=rf"config key `model.arch`: .* was converted for "
                                          rf"{VIT_Q}; set `model.arch: {VIT_Q}`"):
        resolve(_cfg("ViT-B-16-quickgelu", out))
    with pytest.raises(ConfigError, match=rf"uses gelu, .* set `model.arch: {VIT_Q}`"):
        resolve(_cfg("ViT-B-16", out))
    _, out, _ = converted["bin"]  # GELU weights (LAION-style) under a QuickGELU architecture
    with pytest.raises(ConfigError, match=r"trained with gelu but .* set `model.arch: ViT-B-32`"):
        resolve(_cfg(VIT_Q, out))


def test_config_check_gives_the_import_command_that_works(files, tmp_path):
    """A .pt in `model.weights` is refused before any job with the exact command; running it
    gives a file the same config (new path + sha256) accepts."""
    src = files / "ViT-B-32.pt"
    with pytest.raises(ConfigError) as err:
        resolve(_cfg(VIT, src))
    msg = str(err.value)
    out = files / "ViT-B-32.clipbd.safetensors"
    cmd = f"python -m clipbd import-weights {src} --arch {VIT_Q} --out {out}"
    assert msg.startswith(f"config key `model.weights`: {src} is a TorchScript archive")
    assert cmd in msg
    env = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, *shlex.split(cmd)[1:], "--threads", "1"]
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    line = json.loads(res.stdout.splitlines()[0])
    assert line["sha256"] == sha256_file(out) and line["activation"] == "quick_gelu"
    assert f'weights: {out}, sha256: "{line["sha256"]}"' in res.stdout
    assert resolve(_cfg(VIT_Q, out))["model"]["weights"] == str(out)


def test_verb_refuses_gelu_for_openai_in_one_line(files, tmp_path, capsys):
    from clipbd.cli import main

    out = tmp_path / "w.safetensors"
    argv = ["import-weights", str(files / "ViT-B-32.pt"), "--arch", VIT, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists() and (files / "ViT-B-32.pt").is_file()
    assert re.fullmatch(rf"clipbd import-weights: {files}/ViT-B-32.pt: its weights were trained "
                        rf"with quick_gelu \(openai-torchscript\), but --arch {VIT} uses gelu: .* "
                        rf"use --arch {VIT_Q}\n", err), err


def test_config_check_names_each_foreign_format(files):
    cases = {"ViT-B-32-state-dict.pt": ("a pickled torch.save file", f"--arch {VIT_Q} --out"),
             "open_clip_pytorch_model.bin": ("a pickled torch.save file",
                                             f"--arch {VIT} --activation gelu --out"),
             "open_clip_model.safetensors": ("a safetensors file without clipbd's header",
                                             f"--arch {VIT} --activation gelu --out")}
    for name, (what, args) in cases.items():
        with pytest.raises(ConfigError) as err:
            resolve(_cfg(VIT, files / name))
        msg = str(err.value)
        assert f"config key `model.weights`: {files / name} is {what}" in msg, msg
        assert f"python -m clipbd import-weights {files / name} {args}" in msg, msg
    assert "if they are OpenAI-trained weights, use --arch ViT-B-32-quickgelu" in msg
    junk = files / "notes.txt"
    junk.write_text("sha256 of the weights: ...")
    with pytest.raises(ConfigError, match=r"`model.weights`: .*notes.txt is neither a clipbd "
                                          r"safetensors file nor a weight file"):
        resolve(_cfg(VIT, junk))


def test_audit_checks_the_converted_file_not_its_source(converted, tmp_path):
    """The sidecar ties the file to its hash; the source is provenance, not an input the
    audit needs (it may be deleted after conversion)."""
    from clipbd.audit.chain import Auditor

    _, out, _ = converted["rn50"]
    entry = Auditor(tmp_path, None).visit(str(out))
    assert (entry.status, entry.step, entry.inputs, entry.reasons) == (
        "ok", "import-weights", [], [])


@pytest.mark.integration
def test_snakemake_refuses_a_pickle_before_any_job(tmp_path):
    import yaml

    pt = tmp_path / "model.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, pt)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_cfg(VIT, pt)))
    res = snakemake(tmp_path, "-n", timeout=300)
    err = res.stderr + res.stdout
    assert res.returncode != 0 and "clipbd config error: config key `model.weights`" in err
    assert f"python -m clipbd import-weights {pt} --arch {VIT} --activation gelu --out" in err
    assert not (tmp_path / "results").exists()


def test_help_documents_every_format(capsys):
    from clipbd.cli import parser

    with pytest.raises(SystemExit):
        parser().parse_args(["import-weights", "--help"])
    out = capsys.readouterr().out
    for fmt in ("openai-torchscript", "openai-state-dict", "open_clip-state-dict",
                "open_clip-safetensors", "torch.jit.load", "weights_only=True",
                "forward is\n                        never called", "--activation"):
        assert fmt in out, fmt
