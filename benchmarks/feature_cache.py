"""Benchmark: evaluating a text-side defense from cached image features vs encoding the images.

Usage: .venv/bin/python benchmarks/feature_cache.py [--results results] [--repeat 3]

Uses the embedded study's artifacts (run `bash scripts/study.sh` first): the BadNet model,
the Fashion-MNIST test split and its triggered copy. Prints, for `evaluate` of the no-defense
model and of CoOp-style heads, the time with and without the cache and their ratio, and
writes the figures to results/benchmarks/feature_cache.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from clipbd import features
from clipbd.verbs import evaluate as evaluate_verb
from clipbd.artifacts import write_json
from clipbd.config import load
from clipbd.data import dataset_classes, load_split
from clipbd.evaluate import logits
from clipbd.models import clip
from clipbd.models.zeroshot import Classifier, ZeroShotHead, class_text_features

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=str(ROOT / "results"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = Path(args.results)
    model_path = r / "models/backdoor/fmnist/badnet/default/model.safetensors"
    test_path = r / "data/fmnist/test.safetensors"
    poisoned = r / "poisoned/fmnist/badnet/default/test.safetensors"
    for p in (model_path, test_path, poisoned):
        if not p.is_file():
            sys.exit(f"{p} not found: run `bash scripts/study.sh` first")
    cfg = load(ROOT / "config/config.yaml")
    ds = cfg["datasets"]["fmnist"]
    run = {"dataset": "fmnist", "datasets": {"fmnist": ds}, "defense": "none", "params": {},
           "run_seed": 0, "eval_batch_size": cfg["eval_batch_size"], "row": {}}
    bs = cfg["eval_batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        feats = str(Path(tmp) / "features.safetensors")
        t_cache = best_of(lambda: features.write(run, str(model_path), str(test_path), str(poisoned),
                                                 feats, ""), 1)
        out = str(Path(tmp) / "m.json")

        def step(cached):
            return lambda: evaluate_verb.evaluate(run, str(model_path), "", str(test_path), str(poisoned),
                                          out, "", feats if cached else "")

        t_step_plain, t_step_cached = best_of(step(False), args.repeat), best_of(step(True), args.repeat)
    # the scoring part alone: what every further text-side defense pays per evaluation
    model, arch = clip.load_checkpoint(model_path)
    head = ZeroShotHead(class_text_features(model, clip.tokenizer(arch), dataset_classes(ds),
                                            ds["templates"]), model.logit_scale)
    clf = Classifier(model, head)
    images = load_split(test_path).images
    cached = features.encode(model, images, bs)
    t_score_plain = best_of(lambda: logits(clf, images, bs), args.repeat)
    t_score_cached = best_of(lambda: features.head_logits(clf, cached, bs), args.repeat)
    figures = {
        "n_test_images": len(images), "threads": args.threads,
        "features_step_s": round(t_cache, 3),
        "evaluate_step_uncached_s": round(t_step_plain, 3),
        "evaluate_step_cached_s": round(t_step_cached, 3),
        "evaluate_step_speedup": round(t_step_plain / t_step_cached, 2),
        "scoring_uncached_s": round(t_score_plain, 4),
        "scoring_cached_s": round(t_score_cached, 4),
        "scoring_speedup": round(t_score_plain / t_score_cached, 1),
    }
    for k, v in figures.items():
        print(f"{k:28s} {v}")
    write_json(r / "benchmarks" / "feature_cache.json", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
