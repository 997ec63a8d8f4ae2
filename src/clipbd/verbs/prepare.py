"""`prepare`: a dataset's train/test splits, each with its manifest in the sidecar."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from clipbd.records import record
from clipbd.data import FILE_KINDS, fashion_mnist, read_entries, synthetic
from clipbd.data.classnames import class_files
from clipbd.data.decode import write_entries
from clipbd.data.store import listing, manifest, save_split
from clipbd.verbs import output, verb


@verb("prepare", "Prepare a dataset's train/test splits (+ manifests).",
      output("--out-train"), output("--out-test"))
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
        record(out, "prepare", cfg, raw, code, seed, t0, manifest=info)
