"""Benchmark: peak memory of the data steps at N and 4N images (split images stay on disk).

Usage: .venv/bin/python benchmarks/data_scale.py [--quick] [--n 1000] [--threads 2]
            [--out results/benchmarks/data_scale.json]

Builds, in a scratch directory, a synthetic 224 px image folder (JPEGs, four classes) of N
and of 4N images, then runs the real steps over each, every step in its own subprocess:
`prepare` (decoding with --threads worker processes), `poison_test` (a badnet trigger) and
`features` (a one-layer 224 px open_clip ViT). Each subprocess reports its peak RSS
(getrusage: its own, and its decoding workers' apart). Prints one JSON line: peak RSS per
step and size, and `rss_ratio`, the largest 4N-over-N ratio of the steps' own peaks (goal:
<= 1.3; a step holding the split would approach (base + 4 split) / (base + split)).
`poison_test` triggers 1000 images per batch (fixed: the batches decide the trigger's random
draws), so below N = 1000 its batch is the whole split and grows with it (--quick: N = 40).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("bird", "car", "cat", "ship")
ARCH = "bench-tiny-224"  # written into the scratch directory, registered by the child
MODEL = {"embed_dim": 64,
         "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "head_width": 32,
                        "patch_size": 32},
         "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                      "layers": 1}}
STEPS = ("prepare", "poison_test", "features")


def make_folder(root: Path, n: int) -> dict:
    """n noisy 224 px JPEGs (sizes vary, so the resize runs) under root/test/<class>/."""
    from PIL import Image

    g = np.random.default_rng(n)
    for i in range(n):
        d = root / "test" / CLASSES[i % len(CLASSES)]
        d.mkdir(parents=True, exist_ok=True)
        h, w = 224 + int(g.integers(0, 64)), 224 + int(g.integers(0, 64))
        base = g.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        arr = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]  # JPEG-friendly blocks
        Image.fromarray(arr).save(d / f"{i:06d}.jpg", quality=90)
    return {"kind": "image_folder", "path": str(root), "train_dir": None,
            "templates": ["a photo of a {}."]}


def run_step(step: str, d: Path, threads: int) -> None:
    """One step, in this (child) process, on the files of scratch directory `d`."""
    from clipbd import attacks, features
    from clipbd.verbs import poison_test as poison_test_verb
    from clipbd.verbs import prepare as prepare_verb
    from clipbd.artifacts import save_tensors

    if step == "prepare":
        ds = json.loads((d / "dataset.json").read_text())
        cfg = {"name": "bench", "dataset": ds, "image_size": 224, "seed": 0}
        prepare_verb.prepare(cfg, str(d / "train.safetensors"), str(d / "test.safetensors"), "",
                      threads)
    elif step == "poison_test":
        cfg = {"attack": "badnet", "image_size": 224, "seed": 0,
               "params": {"poison_rate": 0.1, "patch_size": 16, "location": "random",
                          "fixed_pattern": True}}
        attack = attacks.get(cfg["attack"], cfg["params"], cfg["image_size"])
        save_tensors(d / "trigger.safetensors", attack.make_trigger(0), {"attack": "badnet"})
        poison_test_verb.poison_test(cfg, str(d / "trigger.safetensors"), str(d / "test.safetensors"),
                          str(d / "poisoned.safetensors"), "")
    else:
        from clipbd.models import clip

        clip.open_clip.add_model_config(d / "model_configs")
        clip.save_checkpoint(d / "model.safetensors", clip.create(ARCH).eval(), ARCH)
        features.write({"eval_batch_size": 64}, str(d / "model.safetensors"),
                       str(d / "test.safetensors"), str(d / "poisoned.safetensors"),
                       str(d / "features.safetensors"), "")


def measure(step: str, d: Path, threads: int) -> dict:
    """Run `step` in a fresh interpreter; its peak RSS (MB) and its workers' (MB), wall s."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--step", step, "--dir", str(d),
                          "--threads", str(threads)], check=True, capture_output=True,
                         text=True).stdout
    peak = json.loads(out.strip().splitlines()[-1])
    return {**peak, "wall_s": round(time.perf_counter() - t0, 2)}


def child(step: str, d: Path, threads: int) -> int:
    run_step(step, d, threads)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"rss_mb": round(own, 1), "workers_rss_mb": round(workers, 1)}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N=40, no decoding workers")
    ap.add_argument("--n", type=int, default=1000,
                    help="images of the smaller folder (at least poison_test's batch of 1000, "
                    "or that batch is the whole split)")
    ap.add_argument("--threads", type=int, default=2, help="prepare's decoding workers")
    ap.add_argument("--out", default="results/benchmarks/data_scale.json")
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # the child side
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        return child(args.step, Path(args.dir), args.threads)
    n, threads = (40, 1) if args.quick else (args.n, args.threads)
    sizes = {"n": n, "4n": 4 * n}
    peaks: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, count in sizes.items():
            d = Path(tmp) / label
            (d / "model_configs").mkdir(parents=True)
            (d / "model_configs" / f"{ARCH}.json").write_text(json.dumps(MODEL))
            (d / "dataset.json").write_text(json.dumps(make_folder(d / "images", count)))
            peaks[label] = {s: measure(s, d, threads) for s in STEPS}
            peaks[label]["split_mb"] = round((d / "test.safetensors").stat().st_size / 1e6, 1)
    ratios = {s: round(peaks["4n"][s]["rss_mb"] / peaks["n"][s]["rss_mb"], 3) for s in STEPS}
    result = {"benchmark": "data_scale", "image_px": 224, "sizes": sizes, "threads": threads,
              "peak_rss_mb": {label: {s: p[s]["rss_mb"] for s in STEPS}
                              for label, p in peaks.items()},
              "workers_peak_rss_mb": {label: p["prepare"]["workers_rss_mb"]
                                      for label, p in peaks.items()},
              "split_mb": {label: p["split_mb"] for label, p in peaks.items()},
              "wall_s": {label: {s: p[s]["wall_s"] for s in STEPS} for label, p in peaks.items()},
              "rss_ratio_per_step": ratios, "rss_ratio": max(ratios.values()),
              "goal_rss_ratio": 1.3,
              "note": "peak RSS of each step's own process (getrusage), the decoding workers "
                      "apart; every step reads and writes the split a batch at a time; "
                      "poison_test's batch is 1000 images, so below N=1000 it grows with N"}
    print(json.dumps(result))
    if args.out:
        from clipbd.artifacts import write_json

        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
