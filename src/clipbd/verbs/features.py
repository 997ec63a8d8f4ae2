"""`features`: a model's clean and triggered test images encoded once (the shared cache)."""
from __future__ import annotations

from clipbd import features
from clipbd.verbs import arg, output, verb


@verb("features", "Encode a model's clean and triggered test images once (shared cache).",
      arg("--model", "model_path"), arg("--test", "test_path"),
      arg("--poisoned", "poisoned_path", default=""), output())
def encode(cfg, model_path, test_path, poisoned_path, out, code):
    features.write(cfg, model_path, test_path, poisoned_path, out, code)
