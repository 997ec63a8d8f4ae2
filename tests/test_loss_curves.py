"""Loss curves: bounded in the sidecars of training jobs, drawn per training stage."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from clipbd.artifacts import save_tensors, write_json, write_sidecar
from clipbd.data.store import ImageSet
from clipbd.defenses import REGISTRY
from clipbd.defenses.base import DefenseContext
from clipbd.models import clip
from clipbd.report import loss_curves
from clipbd.train import curve

ARCH = "clipbd-tiny-vit"
CLASSES = ["cat", "dog", "bird"]


def test_short_curves_are_kept_whole():
    c = curve.downsample([3.0, 2.0, 1.5])
    assert c == {"step": [1, 2, 3], "loss": [3.0, 2.0, 1.5], "n_steps": 3, "chunk": 1,
                 "first_step": 1}


def test_long_curves_are_chunk_means_of_at_most_200_points():
    losses = [float(i % 7) for i in range(100_001)]
    c = curve.downsample(losses)
    assert c["chunk"] == 501 and len(c["step"]) == len(c["loss"]) == 200 <= curve.POINTS
    assert c["step"][0] == 501 and c["step"][-1] == 100_001  # each chunk's last step, 1-based
    assert c["loss"][0] == pytest.approx(sum(losses[:501]) / 501)
    tail = losses[199 * 501:]  # the last chunk is the rest (shorter)
    assert len(tail) == 302 and c["loss"][-1] == pytest.approx(sum(tail) / len(tail))
    assert len(json.dumps(c)) < 10_000
    # a resumed loop whose first steps were lost counts from where it started
    assert curve.downsample([1.0, 0.5], first_step=41)["step"] == [41, 42]


def test_curves_field_skips_loops_that_did_not_train():
    assert curve.curves(train=[], inversion=None) == {}
    assert set(curve.curves(train=[1.0], inversion=[2.0])["loss_curves"]) == {"train",
                                                                               "inversion"}


@pytest.mark.parametrize("name", ["linear_probe", "ft", "fst"])
def test_defenses_keep_their_loss_per_step(name):
    torch.manual_seed(0)
    model = clip.create(ARCH).eval()
    ctx = DefenseContext(model, clip.tokenizer(ARCH), CLASSES, ["a photo of a {}."], 0)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 32, 32, 3), generator=g, dtype=torch.uint8)
    fewshot = ImageSet(images, torch.arange(12) % 3, CLASSES, [f"i{i}" for i in range(12)])
    cfg = {"linear_probe": {"lr": 0.1, "momentum": 0.9, "epochs": 3, "batch_size": 4},
           "ft": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "momentum": 0.9,
                  "epochs": 3, "batch_size": 4, "augment": False},
           "fst": {"lr": 0.01, "momentum": 0.9, "epochs": 3, "batch_size": 4, "alpha": 0.2,
                   "augment": False}}[name]
    defense = REGISTRY.get(name)(cfg)
    defense.fit(ctx, fewshot)
    assert len(defense.losses) == 3 * 3  # 3 epochs of 3 batches of 4
    assert all(math.isfinite(x) and x > 0 for x in defense.losses)
    field = curve.of(defense)["loss_curves"]["train"]
    assert field["loss"] == pytest.approx(defense.losses) and field["n_steps"] == 9


def _artifact(path, step, inputs, losses=None):
    save_tensors(path, {"x": torch.zeros(1)})
    write_sidecar(path, step=step, config={}, inputs=inputs, code="c", seed=0, started=0.0,
                  extra=curve.curves(train=losses) or None)


def test_the_report_walks_the_chain_and_draws_a_panel_per_stage(tmp_path):
    r = tmp_path / "results"
    clean = str(r / "models" / "clean" / "model.safetensors")
    bad = str(r / "models" / "backdoor" / "shapes" / "badnet" / "default" / "model.safetensors")
    delta = str(r / "defenses" / "shapes" / "badnet" / "default" / "rvpt" / "default" /
                "shots~2" / "seed~0" / "delta.safetensors")
    stale = str(r / "models" / "backdoor" / "old" / "model.safetensors")
    _artifact(clean, "pretrain", [], [4.0, 3.0, 2.0])
    _artifact(bad, "backdoor", [clean], [2.5, 1.0])
    _artifact(delta, "defend", [bad], [1.5, 1.25, 0.75, 0.5])
    _artifact(stale, "backdoor", [clean], [9.0])  # not behind the metrics: not drawn
    metrics = str(r / "metrics" / "m" / "metrics.json")
    write_json(metrics, {"metrics": {}, "provenance": {"inputs": {bad: "", delta: ""}}})
    found = loss_curves.collect([metrics])
    assert [(f["step"], f["panel"]) for f in found] == [
        ("pretrain", "pre-training (contrastive)"), ("backdoor", "backdoor training (contrastive)"),
        ("defend", "defense: rvpt")]
    png, pdf, csv = (str(tmp_path / f"curves.{e}") for e in ("png", "pdf", "csv"))
    loss_curves.figure(found, png, pdf)
    loss_curves.write_csv(found, csv)
    assert open(png, "rb").read(4) == b"\x89PNG" and open(pdf, "rb").read(4) == b"%PDF"
    df = pd.read_csv(csv)
    assert list(df.columns) == loss_curves.COLUMNS
    assert df[df.stage == "defend"]["loss"].tolist() == [1.5, 1.25, 0.75, 0.5]
    assert df[df.stage == "pretrain"]["step"].tolist() == [1, 2, 3]
    assert set(df.artifact) == {clean, bad, delta}
