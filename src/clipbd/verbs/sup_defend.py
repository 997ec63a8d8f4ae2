"""`sup-defend`: a victim purified (FT/LP/FE-tuning/FT-init/FST), then evaluated."""
from __future__ import annotations

from clipbd.supervised import steps
from clipbd.verbs import arg, output, verb

verb("sup-defend", "Supervised: purify a victim (FT/LP/FE-tuning/FT-init/FST), evaluate.",
     arg("--victim", "victim_path"), arg("--train", "train_path"), arg("--test", "test_path"),
     arg("--trigger", "trigger_path"), output(), output("--metrics", "metrics_out"))(steps.defend)
