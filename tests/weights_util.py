"""Weight files as users hold them, made from random-init open_clip architectures (tests)."""
from __future__ import annotations

from pathlib import Path

import torch


def openai_layout(model: torch.nn.Module) -> torch.nn.Module:
    """An open_clip CLIP turned into OpenAI's released layout, in place: fp16 weights (norms
    and embeddings stay fp32), the keys context_length / input_resolution / vocab_size, and
    no attn_mask in the state dict."""
    from open_clip.model import convert_weights_to_lp

    convert_weights_to_lp(model, torch.float16)
    mask = model._buffers.pop("attn_mask")
    model.attn_mask = mask  # a plain attribute, as in OpenAI's model
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    for key, value in (("input_resolution", size), ("context_length", model.context_length),
                       ("vocab_size", model.vocab_size)):
        model.__dict__.pop(key, None)
        model.register_buffer(key, torch.tensor(value))
    return model


def save_openai_torchscript(arch: str, path: str | Path, seed: int = 0) -> torch.nn.Module:
    """A random-init `arch` (a -quickgelu one) saved the way OpenAI's ViT-B-32.pt is: a
    scripted module in OpenAI's layout. Returns that module (eval mode)."""
    from clipbd.models.clip import open_clip

    torch.manual_seed(seed)
    model = openai_layout(open_clip.create_model(arch).eval())
    torch.jit.script(model).save(str(path))
    return model
