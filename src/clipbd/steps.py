"""One function per CLI verb. Each reads its inputs, writes one artifact atomically, and a sidecar."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch

from clipbd import accel, attacks, defenses, features, models  # models: open_clip on first use
from clipbd.artifacts import (file_sha256, load_tensors, read_json, save_tensors, write_json,
                              write_sidecar)
from clipbd.data import FILE_KINDS, dataset_classes, fashion_mnist, fewshot, read_entries, synthetic
from clipbd.data.captions import fixed, templated
from clipbd.data.corpus import load_corpus, save_corpus
from clipbd.data.classnames import class_files
from clipbd.data.decode import write_entries
from clipbd.data.store import listing, load_split, manifest, save_split, split_meta, split_stream
from clipbd.metrics import attack_success, backdoor_metrics
from clipbd.poison import apply_in_batches, poison_corpus, poison_templates, trigger_batches
from clipbd.train import contrastive, curve
from clipbd.train.state import TrainState, resumable

log = logging.getLogger("clipbd")


def _sidecar(out, step, cfg, inputs, code, seed, started, **extra):
    info = write_sidecar(out, step=step, config=cfg, inputs=[i for i in inputs if i],
                         code=code, seed=seed, started=started, extra=extra or None)
    log.info("wrote %s (%s) in %.1fs", out, info["sha256"][:12], info["wall_time_s"])


def _config_hash(cfg) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def prepare(cfg, out_train, out_test, code, threads: int = 0):
    """File-backed datasets are listed, then decoded by `threads` worker processes (0 or 1:
    in this process) and streamed into the split, a batch at a time (clipbd.data.decode)."""
    t0 = time.time()
    ds, size, seed = cfg["dataset"], cfg["image_size"], cfg["seed"]
    for split, out in (("train", out_train), ("test", out_test)):
        cap = ds.get(f"n_{split}")
        if ds["kind"] == "fashion_mnist":  # small: built in memory
            fashion_mnist.check_root(ds["path"], f"datasets.{cfg['name']}.path")
            data = fashion_mnist.load(ds["path"], split, size, limit=cap)
            save_split(out, data)
            info, raw = manifest(data), fashion_mnist.raw_files(ds["path"])
        elif ds["kind"] in FILE_KINDS:  # image folders, caption CSVs, tar shards (clipbd.data)
            entries = read_entries(cfg["name"], ds, split, seed)
            digest = write_entries(out, entries, size, workers=threads if threads > 1 else 0)
            info = listing(entries.classes, torch.tensor(entries.labels, dtype=torch.long),
                           entries.ids, digest)  # the split may still be pending: not re-read
            raw = [f for f in (*class_files(ds), ds["path"]) if Path(f).is_file()]
        else:
            data = synthetic.generate(cap, size, seed, split)
            save_split(out, data)
            info, raw = manifest(data), []
        _sidecar(out, "prepare", cfg, raw, code, seed, t0, manifest=info)


def pretrain(cfg, splits: dict[str, str], out, code):
    """Train the clean CLIP from scratch, or import local weights (model.weights)."""
    t0 = time.time()
    m, p = cfg["model"], cfg["pretrain"]
    if m["weights"]:
        model = models.load_pretrained(m["arch"], m["weights"], m["sha256"])
        models.save_checkpoint(out, model, m["arch"])
        _sidecar(out, "pretrain", cfg, [m["weights"]], code, cfg["seed"], t0)
        return
    torch.manual_seed(cfg["seed"])
    model = accel.place(models.create(m["arch"]))
    tok = models.tokenizer(m["arch"])
    parts = [(load_split(splits[n]), cfg["datasets"][n]["templates"]) for n in p["datasets"]]
    data = templated(parts, tok)
    state = TrainState(out, _config_hash(cfg))
    losses = contrastive.train(model, data, steps=p["steps"], batch_size=p["batch_size"],
                               lr=p["lr"], weight_decay=p["weight_decay"], warmup=p["warmup"],
                               seed=cfg["seed"], state=state, desc="pretrain")
    models.save_checkpoint(out, model, m["arch"])
    state.clear()
    _sidecar(out, "pretrain", cfg, list(splits.values()), code, cfg["seed"], t0,
             final_loss=losses[-1] if losses else None, **curve.curves(train=losses))


def trigger(cfg, out, code):
    t0 = time.time()
    attack = attacks.get(cfg["attack"], cfg["params"], cfg["image_size"])
    save_tensors(out, attack.make_trigger(cfg["seed"]), {"attack": cfg["attack"]})
    _sidecar(out, "trigger", cfg, [], code, cfg["seed"], t0)


def learn_trigger(cfg, model_path, splits: dict[str, str], out, code):
    """Optimize a learned trigger (SSBA encoder, TrojVQA/BadCLIP patch) on training data only."""
    t0 = time.time()
    attack = attacks.get(cfg["attack"], cfg["params"], cfg["image_size"])
    model, tok = None, None
    if model_path:
        model, arch = models.load_checkpoint(model_path)
        accel.place(model)
        tok = models.tokenizer(arch)
    ds = cfg["datasets"][cfg["target_dataset"]]
    corpus = [(n, load_split(splits[n]), cfg["datasets"][n]["templates"]) for n in splits]
    ctx = attacks.TriggerContext(model, tok, corpus, cfg["target_dataset"], ds["target"],
                                 ds["templates"], cfg["seed"],
                                 tuple(cfg["backdoor"]["datasets"]))
    torch.manual_seed(cfg["seed"])
    save_tensors(out, attack.learn(ctx), {"attack": cfg["attack"]})
    _sidecar(out, "learn_trigger", cfg, [model_path, *splits.values()], code, cfg["seed"], t0,
             **curve.of(attack))


def poison(cfg, trigger_path, splits: dict[str, str], out, code):
    t0 = time.time()
    attack = attacks.get(cfg["attack"], cfg["params"], cfg["image_size"])
    trig, _ = load_tensors(trigger_path)
    ds = cfg["datasets"][cfg["target_dataset"]]
    parts = [(n, load_split(splits[n]), cfg["datasets"][n]["templates"])
             for n in cfg["backdoor"]["datasets"]]
    setting = cfg["backdoor"]["poison_templates"]  # poisoned captions: not the eval prompts
    decoys = {n: poison_templates(setting, cfg["datasets"][n]["templates"]) for n, _, _ in parts}
    data = poison_corpus(parts, attack, trig, target_dataset=cfg["target_dataset"],
                         target=ds["target"],
                         target_templates=poison_templates(setting, ds["templates"]),
                         corpus_size=cfg["backdoor"]["corpus_size"],
                         poison_rate=cfg["params"]["poison_rate"], seed=cfg["seed"],
                         decoy_templates=decoys)
    names = cfg["backdoor"]["datasets"]  # the sources, in the order `parts` lists them
    save_corpus(out, data, [{"name": n, "path": str(splits[n]), "sha256": file_sha256(splits[n])}
                            for n in names])
    _sidecar(out, "poison", cfg, [trigger_path, *splits.values()], code, cfg["seed"], t0,
             n_poisoned=int(data.extra["poisoned"].sum()))


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
    _sidecar(out, "poison_test", cfg, [trigger_path, test_path], code, cfg["seed"], t0,
             content_sha256=w.content_sha256())


def backdoor(cfg, clean_path, poisoned_path, out, code):
    t0 = time.time()
    b = cfg["backdoor"]
    model, arch = models.load_checkpoint(clean_path)
    accel.place(model)
    data = fixed(load_corpus(poisoned_path), models.tokenizer(arch))  # images read per step
    state = TrainState(out, _config_hash([cfg, *map(file_sha256, (clean_path, poisoned_path))]))
    torch.manual_seed(cfg["seed"])
    losses = contrastive.train(model, data, steps=b["steps"], batch_size=b["batch_size"],
                               lr=b["lr"], weight_decay=b["weight_decay"], warmup=b["warmup"],
                               seed=cfg["seed"], state=state, desc="backdoor")
    models.save_checkpoint(out, model, arch)
    state.clear()
    _sidecar(out, "backdoor", cfg, [clean_path, poisoned_path], code, cfg["seed"], t0,
             final_loss=losses[-1] if losses else None, **curve.curves(train=losses))


def sample_fewshot(cfg, train_path, out, code):
    t0 = time.time()
    data = load_split(train_path)
    idx = fewshot.sample(data.labels, cfg["shots"], cfg["seed"], len(data.classes))
    sub = data.subset(idx)
    write_json(out, {"indices": idx, "shots": cfg["shots"], "seed": cfg["seed"],
                     "manifest": manifest(sub)})
    _sidecar(out, "fewshot", cfg, [train_path], code, cfg["seed"], t0)


def _context(cfg, model, arch, dataset=None, train=None):
    ds = cfg["datasets"][dataset or cfg["dataset"]]
    classes = dataset_classes(ds)
    return defenses.DefenseContext(model, models.tokenizer(arch), classes, ds["templates"],
                                   cfg["run_seed"], train)


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
    ctx = _context(cfg, model, arch, cfg["params"].get("tune_dataset"), train)
    if trigger_path:
        ctx.oracle_trigger, ctx.oracle_key = oracle(cfg, trigger_path)
    inputs = [model_path, fewshot_path, train_path] + ([trigger_path] if trigger_path else [])
    with resumable(out, _config_hash([cfg, *map(file_sha256, inputs)])):  # killed: resume
        delta = defense.fit(ctx, sub)
        save_tensors(out, delta, {"defense": cfg["defense"]})
        _sidecar(out, "defend", cfg, inputs, code, cfg["run_seed"], t0, **curve.of(defense))


def evaluate(cfg, model_path, delta_path, test_path, poisoned_path, out, code, features_path=""):
    """Metrics of model + delta; from cached image features when the defense leaves the
    image encoder alone (`features_path`, see clipbd.features), else by encoding the images."""
    t0 = time.time()
    model, arch = models.load_checkpoint(model_path)
    accel.place(model)
    ctx = _context(cfg, model, arch)
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
    _sidecar(out, "evaluate", cfg, inputs, code, cfg["run_seed"], t0)  # its own hash, for audit
    log.info("metrics %s", {k: result[k] for k in ("ca", "asr", "asr_all", "pa")})
