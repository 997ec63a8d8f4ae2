"""open_clip models: the embedded tiny configs, local weight files, zero-shot heads.

`clipbd.models.clip` imports open_clip (and torchvision), about 1.5 s of start-up; the
names below load it on first use, so `clipbd.models.zeroshot` alone stays light.
"""
import importlib

_HOME = {"create": "clip", "load_checkpoint": "clip", "load_pretrained": "clip",
         "save_checkpoint": "clip", "tokenizer": "clip", "Classifier": "zeroshot",
         "ZeroShotHead": "zeroshot", "class_text_features": "zeroshot"}
__all__ = list(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'clipbd.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"clipbd.models.{_HOME[name]}"), name)
