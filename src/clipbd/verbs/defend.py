"""`defend`: a defense fit on few-shot clean data; only its delta is stored."""
from __future__ import annotations

import time

import torch

from clipbd import accel, attacks, defenses, models
from clipbd.artifacts import file_sha256, load_tensors, read_json, save_tensors
from clipbd.records import config_hash, record
from clipbd.data.store import load_split
from clipbd.defenses.base import run_context
from clipbd.poison import apply_in_batches
from clipbd.train import curve
from clipbd.train.state import resumable
from clipbd.verbs import arg, output, verb


def tuning_set(cfg, train, indices):
    """The few-shot set a defense tunes on; without the target class when asked (RVPT Table 4)."""
    sub = train.subset(indices)
    target = cfg["datasets"][cfg["dataset"]]["target"]
    if cfg["params"].get("without_target_class") and target in sub.classes:
        sub = sub.subset(torch.nonzero(sub.labels != sub.classes.index(target)).flatten())
    return sub


def oracle(cfg, trigger_path):
    """(uint8 images -> the same images carrying the attack's real trigger, its text key):
    what CBPT's `oracle_trigger` ablation tunes on in place of the inverted dummies."""
    name, a = cfg["row"]["attack"], cfg["attack"]
    attack = attacks.get(name, a["params"], a["image_size"])
    trig, _ = load_tensors(trigger_path)
    return lambda images: apply_in_batches(attack, images, trig, a["seed"] + 3), attack.text_prefix


@verb("defend", "Fit a defense on few-shot clean data; store only its delta.",
      arg("--model", "model_path"), arg("--fewshot", "fewshot_path"), arg("--train", "train_path"),
      arg("--trigger", "trigger_path", default=""), output())
def defend(cfg, model_path, fewshot_path, train_path, out, code, trigger_path=""):
    """Fit on the few-shot draw of the tuning dataset (`tune_dataset`, default the evaluated one);
    `trigger_path`: the attack's stored trigger, for defenses that apply it (`oracle_trigger`)."""
    t0 = time.time()
    model, arch = models.load_checkpoint(model_path)
    accel.place(model)
    torch.manual_seed(cfg["run_seed"])
    defense = defenses.get(cfg["defense"], cfg["params"])
    train = load_split(train_path)
    sub = tuning_set(cfg, train, read_json(fewshot_path)["indices"])
    ctx = run_context(cfg, model, arch, cfg["params"].get("tune_dataset"), train)
    if trigger_path:
        ctx.oracle_trigger, ctx.oracle_key = oracle(cfg, trigger_path)
    inputs = [model_path, fewshot_path, train_path] + ([trigger_path] if trigger_path else [])
    with resumable(out, config_hash([cfg, *map(file_sha256, inputs)])):  # killed: resume
        delta = defense.fit(ctx, sub)
        save_tensors(out, delta, {"defense": cfg["defense"]})
        record(out, "defend", cfg, inputs, code, cfg["run_seed"], t0, **curve.of(defense))
