"""`evaluate`: the metrics (CA, ASR, ASR_all, PA) of a model with a defense's delta."""
from __future__ import annotations

import logging
import time

from clipbd import accel, defenses, features, models
from clipbd.artifacts import file_sha256, load_tensors, write_json
from clipbd.records import record
from clipbd.data.store import load_split, split_meta
from clipbd.defenses.base import run_context
from clipbd.metrics import attack_success, backdoor_metrics
from clipbd.verbs import arg, output, verb

log = logging.getLogger("clipbd")


@verb("evaluate", "Metrics (CA, ASR, ASR_all, PA) of a model + defense delta.",
      arg("--model", "model_path"), arg("--delta", "delta_path", default=""),
      arg("--test", "test_path"), arg("--poisoned", "poisoned_path", default=""),
      arg("--features", "features_path", default=""), output())
def evaluate(cfg, model_path, delta_path, test_path, poisoned_path, out, code, features_path=""):
    """Metrics of model + delta; from cached image features when the defense leaves the
    image encoder alone (`features_path`, see clipbd.features), else by encoding the images."""
    t0 = time.time()
    model, arch = models.load_checkpoint(model_path)
    accel.place(model)
    ctx = run_context(cfg, model, arch)
    defense = defenses.get(cfg["defense"], cfg["params"])
    delta = load_tensors(delta_path)[0] if delta_path else {}
    test = load_split(test_path)
    bs = cfg["eval_batch_size"]
    target = test.classes.index(cfg["datasets"][cfg["dataset"]]["target"])
    cached = features.load(features_path) if features_path and defense.frozen_image else None
    trig = load_split(poisoned_path).images if poisoned_path else None  # on disk, as test's
    images = {features.CLEAN: test.images, features.TRIGGERED: trig}
    feats = dict(cached or {})  # image features per image set: each set is encoded once

    def scores(prefix, which):  # the text prefix changes the head only, never the features
        clf = defense.classifier(ctx, delta, prefix)
        if which not in feats:
            feats[which] = features.encode_with(clf, images[which], bs)
        return features.head_logits(clf, feats[which], bs)

    clean_logits = scores("", features.CLEAN)
    trig_logits, keys = None, {}
    if trig is not None:
        prefix = split_meta(poisoned_path).get("text_prefix", "")
        trig_logits = scores(prefix, features.TRIGGERED)
        if prefix:  # dual key: each key alone must not trigger
            keys = {"asr_image_key": attack_success(scores("", features.TRIGGERED),
                                                    test.labels, target),
                    "asr_text_key": attack_success(scores(prefix, features.CLEAN),
                                                   test.labels, target)}
    result = {**cfg["row"], **backdoor_metrics(clean_logits, test.labels, trig_logits, target),
              **keys, "n_test": len(test), "target": cfg["datasets"][cfg["dataset"]]["target"]}
    inputs = [model_path, delta_path, test_path, poisoned_path,
              features_path if cached is not None else ""]
    write_json(out, {"metrics": result, "provenance": {
        "step": "evaluate", "config": cfg, "code": code,
        "inputs": {p: file_sha256(p) for p in inputs if p},
        "wall_time_s": round(time.time() - t0, 3)}})
    record(out, "evaluate", cfg, inputs, code, cfg["run_seed"], t0)  # its own hash, for audit
    log.info("metrics %s", {k: result[k] for k in ("ca", "asr", "asr_all", "pa")})
