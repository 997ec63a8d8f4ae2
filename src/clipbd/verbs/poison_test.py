"""`poison-test`: a triggered copy of a test split, written a batch at a time."""
from __future__ import annotations

import time

from clipbd import attacks
from clipbd.artifacts import load_tensors
from clipbd.records import record
from clipbd.data.store import load_split, split_stream
from clipbd.poison import trigger_batches
from clipbd.verbs import arg, output, verb


@verb("poison-test", "Materialize a triggered test set.",
      arg("--trigger", "trigger_path"), arg("--test", "test_path"), output())
def poison_test(cfg, trigger_path, test_path, out, code):
    t0 = time.time()
    attack = attacks.get(cfg["attack"], cfg["params"], cfg["image_size"])
    trig, _ = load_tensors(trigger_path)
    data = load_split(test_path)  # images on disk: read, triggered and written a batch at a time
    with split_stream(out, len(data), tuple(data.images.shape[1:]), classes=data.classes,
                      ids=data.ids, labels=data.labels, captions=data.captions, extra=data.extra,
                      meta={"text_prefix": attack.text_prefix}) as w:
        for batch in trigger_batches(attack, data.images, trig, cfg["seed"] + 2):
            w.write(batch)
    record(out, "poison_test", cfg, [trigger_path, test_path], code, cfg["seed"], t0,
             content_sha256=w.content_sha256())
