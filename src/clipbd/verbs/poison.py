"""`poison`: the poisoned fine-tuning corpus, an index into the source splits."""
from __future__ import annotations

import time

from clipbd import attacks
from clipbd.artifacts import file_sha256, load_tensors
from clipbd.records import record
from clipbd.data.corpus import save_corpus
from clipbd.data.store import load_split
from clipbd.poison import poison_corpus, poison_templates
from clipbd.verbs import arg, output, pairs, verb


@verb("poison", "Build the poisoned fine-tuning corpus.",
      arg("--trigger", "trigger_path"), pairs("--split", "splits"), output())
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
    record(out, "poison", cfg, [trigger_path, *splits.values()], code, cfg["seed"], t0,
             n_poisoned=int(data.extra["poisoned"].sum()))
