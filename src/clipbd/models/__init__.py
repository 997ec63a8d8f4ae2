"""open_clip models: the embedded tiny configs, local weight files, zero-shot heads."""
from clipbd.models.clip import (create, load_checkpoint, load_pretrained, save_checkpoint,
                                tokenizer)
from clipbd.models.zeroshot import Classifier, ZeroShotHead, class_text_features

__all__ = ["create", "load_checkpoint", "load_pretrained", "save_checkpoint", "tokenizer",
           "Classifier", "ZeroShotHead", "class_text_features"]
