"""`sup-trigger`: the supervised track's trigger (SSBA: learned on the train split)."""
from __future__ import annotations

from clipbd.supervised import steps
from clipbd.verbs import arg, output, verb

verb("sup-trigger", "Supervised: draw a trigger (SSBA: learn it on the train split).",
     arg("--train", "train_path", default=""), output())(steps.trigger)
