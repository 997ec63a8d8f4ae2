"""`sup-train`: a ResNet-18 victim trained on poisoned data, then evaluated."""
from __future__ import annotations

from clipbd.supervised import steps
from clipbd.verbs import arg, output, verb

verb("sup-train", "Supervised: train + evaluate a ResNet-18 victim on poisoned data.",
     arg("--train", "train_path"), arg("--test", "test_path"),
     arg("--trigger", "trigger_path"), output(), output("--metrics", "metrics_out"))(steps.train)
