"""open_clip models: the embedded tiny configs, local weight files, zero-shot heads.

`clipbd.models.clip` imports open_clip (and torchvision), about 1.5 s of start-up; the
names below load it on first use, so `clipbd.models.zeroshot` alone stays light.
"""
import importlib

CLIP, ZEROSHOT = "clipbd.models.clip", "clipbd.models.zeroshot"  # (fingerprints read these names)
_HOME = {"create": CLIP, "load_checkpoint": CLIP, "load_pretrained": CLIP,
         "save_checkpoint": CLIP, "tokenizer": CLIP, "Classifier": ZEROSHOT,
         "ZeroShotHead": ZEROSHOT, "class_text_features": ZEROSHOT}
__all__ = list(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'clipbd.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
