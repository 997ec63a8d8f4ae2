"""Creating and loading open_clip models without any hub access.

* Tiny architectures ship as open_clip model configs in `configs/` and are registered at
  import (`clipbd-tiny-vit`, ...). They start from random weights and are pre-trained by the
  `pretrain` rule.
* Real architectures (ViT-B-32-quickgelu, RN50, ...) are built by open_clip by name and
  filled from a local clipbd safetensors file whose sha256 must match the config. The files
  users hold (OpenAI TorchScript, open_clip .bin, ...) are converted once by
  `python -m clipbd import-weights` (`clipbd.models.convert`); pickles are never read here.
  The header records the architecture and the activation the weights were trained with
  (OpenAI's: QuickGELU); a file whose activation differs from the architecture's is refused.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from clipbd._compat import import_open_clip
from clipbd.artifacts import file_sha256, load_tensors, save_tensors

open_clip = import_open_clip()

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)


def create(arch: str) -> torch.nn.Module:
    if arch not in open_clip.list_models():
        raise KeyError(f"unknown open_clip architecture {arch!r} (model.arch); known tiny ones: "
                       + ", ".join(m for m in open_clip.list_models() if m.startswith("clipbd")))
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    try:  # open_clip warns "no pretrained weights loaded" on purpose-built random init
        model = open_clip.create_model(arch, pretrained=None)
    finally:
        logging.getLogger().setLevel(logging.INFO)
    return model


def activation(arch: str) -> str:
    """'quick_gelu' or 'gelu': the activation of open_clip architecture `arch`."""
    cfg = open_clip.get_model_config(arch) or {}
    return "quick_gelu" if cfg.get("quick_gelu") else "gelu"


def arch_with(arch: str, act: str) -> str:
    """The open_clip name of `arch` with activation `act` (ViT-B-32 <-> ViT-B-32-quickgelu)."""
    base = arch.removesuffix("-quickgelu")
    name = f"{base}-quickgelu" if act == "quick_gelu" else base
    if name in open_clip.list_models():
        return name
    return f"<an architecture with quick_gelu: {act == 'quick_gelu'}; open_clip has no {name}>"


def header_problem(meta: dict, arch: str, key: str = "model") -> str | None:
    """Why a clipbd safetensors header does not go with `<key>.arch: arch` (None: it does)."""
    have = meta.get("arch")
    if not have:
        return "it has no `arch` in its header (not written by clipbd)"
    trained = meta.get("activation") or activation(have)
    if trained != activation(arch):
        fix = have if activation(have) == trained else arch_with(arch, trained)
        return (f"its weights were trained with {trained} but {arch} uses {activation(arch)}, "
                f"so every number would be silently wrong; set `{key}.arch: {fix}`")
    if have != arch:
        return f"it was converted for {have}; set `{key}.arch: {have}` or convert it again"
    return None


def tokenizer(arch: str):
    return open_clip.get_tokenizer(arch)


def _fill(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not fit the architecture "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise ValueError(f"{source}: shape mismatch for {bad[:3]}")
    model.load_state_dict(state, strict=True)


def load_pretrained(arch: str, weights: str, sha256: str | None, key: str = "model.weights"):
    """Build `arch` and load a local safetensors file, verifying its sha256 first."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {weights} not found: set `{key}` to a local "
                                "clipbd safetensors file (python -m clipbd import-weights)")
    if sha256:
        got = file_sha256(path)
        if got != sha256.lower():
            raise ValueError(f"{weights}: sha256 is {got}, config `{key.rsplit('.', 1)[0]}.sha256` "
                             f"says {sha256}; fix the path or the checksum")
    state, meta = load_tensors(path)
    problem = header_problem(meta, arch, key.rsplit(".", 1)[0])
    if problem:
        raise ValueError(f"{weights} (`{key}`): {problem}; files from elsewhere are converted "
                         "once with `python -m clipbd import-weights SRC --arch ARCH --out FILE`")
    model = create(arch)
    _fill(model, state, str(path))
    return model


def save_checkpoint(path, model: torch.nn.Module, arch: str, extra: dict | None = None) -> None:
    save_tensors(path, dict(model.state_dict()), {"arch": arch, **(extra or {})})


def load_checkpoint(path) -> tuple[torch.nn.Module, str]:
    state, meta = load_tensors(path)
    arch = meta.get("arch")
    if not arch:
        raise ValueError(f"{path}: checkpoint has no `arch` in its header; not written by clipbd")
    model = create(arch)
    _fill(model, state, str(path))
    model.eval()
    return model, arch
