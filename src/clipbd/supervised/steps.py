"""The supervised track's verbs: one function each, atomic outputs with JSON sidecars.

Every job gets its resolved config as JSON (`cfg`, built by workflow/rules/supervised.smk):
dataset, target, image_size, seed, attack + params, poison_rate, victim, defense +
defense_params,
tune_fraction, eval_batch_size and the metrics row's coordinates (`row`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time

import torch

from clipbd.artifacts import file_sha256, load_tensors, save_tensors, write_json, write_sidecar
from clipbd.attacks.base import TriggerContext
from clipbd.data.store import ImageSet, load_split
from clipbd.evaluate import logits
from clipbd.metrics import backdoor_metrics
from clipbd.supervised import attacks, defenses, model as victims
from clipbd.supervised.poison import poison_train, triggered, tuning_indices, victim_indices
from clipbd.train import curve
from clipbd.train.state import resumable
from clipbd.train.optim import make_optimizer
from clipbd.train.supervised import tune

log = logging.getLogger("clipbd.supervised")


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _attack(cfg):
    return attacks.get(cfg["attack"], cfg["params"], cfg["image_size"])


def trigger(cfg: dict, train_path: str, out: str, code: str) -> None:
    """Draw (or, for SSBA, learn on the training split) the trigger of one attack."""
    t0 = time.time()
    attack = _attack(cfg)
    if attack.learned:
        train = load_split(train_path)
        ctx = TriggerContext(None, None, [(cfg["dataset"], train, [])], cfg["dataset"],
                             cfg["target"], [], cfg["seed"])
        torch.manual_seed(cfg["seed"])
        trig = attack.learn(ctx)
    else:
        trig = attack.make_trigger(cfg["seed"])
    save_tensors(out, trig, {"attack": cfg["attack"], "track": "supervised"})
    write_sidecar(out, step="sup_trigger", config=cfg, inputs=[train_path] if attack.learned
                  else [], code=code, seed=cfg["seed"], started=t0)


def victim_data(cfg: dict, train: ImageSet) -> ImageSet:
    return train.subset(victim_indices(len(train), cfg["victim"]["n_train"], cfg["seed"]))


def evaluate(model, cfg: dict, test_path: str, trig: dict) -> dict:
    """CA on the clean test images, ASR (non-target images) / ASR_all / PA on triggered ones."""
    test = load_split(test_path)
    if cfg["victim"]["n_test"]:
        test = test.subset(torch.arange(min(cfg["victim"]["n_test"], len(test))))
    target = test.classes.index(cfg["target"])
    bs = cfg["eval_batch_size"]
    bad = triggered(test, _attack(cfg), trig, cfg["seed"])
    out = backdoor_metrics(logits(model, test.images, bs), test.labels,
                           logits(model, bad, bs), target)
    return {**out, "n_test": len(test)}


def _write_metrics(out, cfg, metrics, inputs, code, t0, **extra) -> None:
    row = {"track": "supervised", **cfg["row"], **metrics, **extra, "target": cfg["target"]}
    write_json(out, {"metrics": row, "provenance": {
        "step": "sup_evaluate", "config": cfg, "code": code,
        "inputs": {p: file_sha256(p) for p in inputs}, "wall_time_s": round(time.time() - t0, 3)}})
    write_sidecar(out, step="sup_evaluate", config=cfg, inputs=inputs, code=code,
                  seed=cfg["seed"], started=t0)
    log.info("metrics %s", {k: row[k] for k in ("attack", "poison_rate", "defense", "ca", "asr")})


def train(cfg: dict, train_path: str, test_path: str, trigger_path: str, out: str,
          metrics_out: str, code: str) -> None:
    """Train the victim on its poisoned subset; its metrics are the `none` defense's."""
    t0 = time.time()
    v = cfg["victim"]
    data = victim_data(cfg, load_split(train_path))
    trig, _ = load_tensors(trigger_path)
    target = data.classes.index(cfg["target"])
    bad = poison_train(data, _attack(cfg), trig, cfg["poison_rate"], target,
                       cfg["attack"] in attacks.CLEAN_LABEL, cfg["seed"])
    torch.manual_seed(cfg["seed"])
    model = victims.build(v["arch"], len(data.classes), v["stem"])
    opt = make_optimizer(model.named_parameters(), "sgd", v["lr"], v["weight_decay"],
                         v["momentum"])
    inputs = [train_path, trigger_path]
    with resumable(out, _hash([cfg, *map(file_sha256, inputs)])):
        losses = tune(model, bad, opt, lr=v["lr"], epochs=v["epochs"],
                      batch_size=v["batch_size"], seed=cfg["seed"], augment=v["augment"],
                      desc="victim")
        n_poisoned = int(bad.extra["poisoned"].sum())
        victims.save(out, model, v["arch"], v["stem"], len(data.classes))
        write_sidecar(out, step="sup_train", config=cfg, inputs=inputs, code=code,
                      seed=cfg["seed"], started=t0,
                      extra={"n_train": len(bad), "n_poisoned": n_poisoned,
                             "final_loss": losses[-1] if losses else None,
                             **curve.curves(train=losses)})
    metrics = evaluate(model.eval(), cfg, test_path, trig)
    _write_metrics(metrics_out, cfg, metrics, [out, test_path, trigger_path], code, t0,
                   n_train=len(bad), n_poisoned=n_poisoned, n_tune=0)


def defend(cfg: dict, victim_path: str, train_path: str, test_path: str, trigger_path: str,
           out: str, metrics_out: str, code: str) -> None:
    """Purify the victim on FST's clean tuning set; store the delta; evaluate."""
    t0 = time.time()
    model, _ = victims.load(victim_path)
    data = victim_data(cfg, load_split(train_path))
    tune_set = data.subset(tuning_indices(len(data), cfg["tune_fraction"], cfg["seed"]))
    defense = defenses.get(cfg["defense"], cfg["defense_params"])
    inputs = [victim_path, train_path]
    with resumable(out, _hash([cfg, *map(file_sha256, inputs)])):
        delta = defense.fit(model, tune_set, cfg["seed"])
        save_tensors(out, delta, {"defense": cfg["defense"], "track": "supervised"})
        write_sidecar(out, step="sup_defend", config=cfg, inputs=inputs, code=code,
                      seed=cfg["seed"], started=t0,
                      extra={"n_tune": len(tune_set), **curve.of(defense)})
    trig, _ = load_tensors(trigger_path)
    metrics = evaluate(victims.with_delta(model, delta), cfg, test_path, trig)
    _write_metrics(metrics_out, cfg, metrics, [victim_path, out, test_path, trigger_path], code,
                   t0, n_train=len(data), n_tune=len(tune_set))
