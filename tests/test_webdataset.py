"""Caption corpora as img2dataset writes them (webdataset tar shards), and TSV caption files."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipbd import config
from clipbd.config import ConfigError
from clipbd.config_checks import check_paths
from clipbd.data import CAPTION_KINDS, FILE_KINDS, dataset_classes, missing_paths, read_split
from clipbd.data import webdataset as wds
from clipbd.data.caption_csv import CAPTION_CLASS
from clipbd.data.image_folder import load_image
from clipbd.data.store import load_split

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "config.yaml"


def jpeg(path: Path, seed: int, size=(23, 17)) -> bytes:
    """A noisy non-square JPEG (resize and crop both matter), written to `path`."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: list[tuple[str, bytes | None, str | None]]) -> None:
    """img2dataset's order: per key `.jpg`, `.txt`, `.json` (None: that member left out)."""
    with tarfile.open(path, "w") as tf:
        for key, image, caption in samples:
            if image is not None:
                add(tf, f"{key}.jpg", image)
            if caption is not None:
                add(tf, f"{key}.txt", caption.encode())
            add(tf, f"{key}.json", json.dumps({"key": key, "status": "success"}).encode())


@pytest.fixture
def shards(tmp_path):
    """Two shards, 3 + 3 samples; shard 1's middle sample has no caption (5 usable pairs).
    The JPEGs are also kept on disk, to decode them with load_image for comparison."""
    out, disk = tmp_path / "cc3m", tmp_path / "jpegs"
    out.mkdir()
    disk.mkdir()
    expect = []
    for s in range(2):
        samples = []
        for i in range(3):
            key = f"{s:05d}{i:04d}"
            image = jpeg(disk / f"{key}.jpg", 10 * s + i)
            caption = None if (s, i) == (1, 1) else f"a caption, number {s}-{i} "
            samples.append((key, image, caption))
            if caption is not None:
                expect.append((f"{s:05d}.tar", key, caption.strip()))
        write_shard(out / f"{s:05d}.tar", samples)
    (out / "00000_stats.json").write_text("{}")  # img2dataset's side files are not shards
    ds = {"kind": "webdataset", "path": str(out), "templates": ["{}"]}
    return ds, disk, expect


def test_webdataset_lists_samples_in_shard_order(shards, caplog):
    ds, _, expect = shards
    assert "webdataset" in FILE_KINDS and "webdataset" in CAPTION_KINDS
    with caplog.at_level(logging.WARNING, logger="clipbd"):
        e = wds.entries(ds, "train", seed=0, name="cc3m")
    assert e.ids == [f"cc3m/{shard}/{key}" for shard, key, _ in expect]
    assert e.captions == [cap for _, _, cap in expect]
    assert e.captions[0] == "a caption, number 0-0"
    assert e.labels == [0] * 5 and e.classes == [CAPTION_CLASS]
    assert [Path(p).name for p, _, _ in e.sources] == ["00000.tar"] * 3 + ["00001.tar"] * 2
    assert "1 sample(s) without an image or a caption skipped (first 00001.tar/000010001)" \
        in caplog.text
    assert dataset_classes(ds) == [CAPTION_CLASS]
    assert len(wds.entries(ds, "test", 0, "cc3m")) == 0


def test_read_source_is_the_member_bytes(shards):
    ds, disk, expect = shards
    e = wds.entries(ds, "train", 0, "cc3m")
    for src, (_, key, _) in zip(e.sources, expect):
        assert wds.read_source(src) == (disk / f"{key}.jpg").read_bytes()


def test_webdataset_images_equal_the_jpegs_decoded_from_disk(shards):
    ds, disk, expect = shards
    data = read_split("cc3m", ds, "train", 8, seed=0)
    want = np.stack([load_image(disk / f"{key}.jpg", 8) for _, key, _ in expect])
    assert data.images.shape == (5, 8, 8, 3)
    assert np.array_equal(np.asarray(data.images), want)
    assert data.captions == [cap for _, _, cap in expect]
    assert data.labels.tolist() == [0] * 5
    assert len(read_split("cc3m", ds, "test", 8, seed=0)) == 0


def test_n_train_is_a_seeded_subset_in_shard_order(shards):
    ds, _, _ = shards
    full = wds.entries(ds, "train", 0, "cc3m").ids
    sub = wds.entries(dict(ds, n_train=3), "train", 0, "cc3m").ids
    assert len(sub) == 3 and set(sub) < set(full)
    assert sub == sorted(sub, key=full.index)
    assert sub == wds.entries(dict(ds, n_train=3), "train", 0, "cc3m").ids
    draws = {tuple(wds.entries(dict(ds, n_train=3), "train", s, "cc3m").ids) for s in range(6)}
    assert len(draws) > 1
    assert wds.entries(dict(ds, n_train=99), "train", 0, "cc3m").ids == full


def test_brace_patterns(shards):
    ds, _, _ = shards
    assert wds.expand_braces("{00000..00002}.tar") == ["00000.tar", "00001.tar", "00002.tar"]
    assert wds.expand_braces("{8..10}-{a,b}") == ["8-a", "8-b", "9-a", "9-b", "10-a", "10-b"]
    assert wds.expand_braces("plain.tar") == ["plain.tar"]
    one = dict(ds, shards="{00001..00001}.tar")
    assert wds.entries(one, "train", 0, "c").ids == ["c/00001.tar/000010000",
                                                     "c/00001.tar/000010002"]
    both = dict(ds, path=ds["path"] + "/{00000..00001}.tar")
    assert wds.entries(both, "train", 0, "c").ids == wds.entries(ds, "train", 0, "c").ids
    assert missing_paths("c", one) == [] and missing_paths("c", both) == []


def test_missing_shards_name_the_key(tmp_path, shards):
    ds, _, _ = shards
    assert missing_paths("cc3m", ds) == []
    gone = str(tmp_path / "nowhere")
    (key, path, fix), = missing_paths("cc3m", dict(ds, path=gone))
    assert (key, path) == ("datasets.cc3m.path", gone)
    assert "folder of the webdataset .tar shards" in fix
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [k for k, _, _ in missing_paths("cc3m", dict(ds, path=str(empty)))] == [
        "datasets.cc3m.path"]
    with pytest.raises(FileNotFoundError, match="datasets.cc3m.path"):
        wds.entries(dict(ds, path=str(empty)), "train", 0, "cc3m")
    (key, path, fix), = missing_paths("cc3m", dict(ds, shards="{00000..00003}.tar"))
    assert key == "datasets.cc3m.shards" and path.endswith("{00000..00003}.tar")
    assert "2 of the pattern's shards are absent" in fix


def test_a_tsv_with_a_tab_separator(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(2):
        Image.fromarray(np.full((6, 9, 3), 50 * i + 10, dtype=np.uint8)).save(
            tmp_path / "img" / f"{i}.png")
    with open(tmp_path / "train.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filepath", "title"])
        w.writerows([["img/0.png", "red, green and blue"], ["img/1.png", "one, two"]])
    ds = {"kind": "caption_csv", "path": str(tmp_path / "train.tsv"), "templates": ["{}"],
          "image_column": "filepath", "caption_column": "title", "separator": "\t"}
    data = read_split("cc", ds, "train", 4, 0)
    assert data.captions == ["red, green and blue", "one, two"]
    assert data.ids == ["cc/img/0.png", "cc/img/1.png"]
    assert data.images[:, 1, 1, 0].tolist() == [10, 60]
    with pytest.raises(ValueError, match="no column 'filepath'.*separator"):
        read_split("cc", dict(ds, separator=","), "train", 4, 0)
    for bad in ("\\t", "", 9):
        with pytest.raises(ValueError, match=r"`datasets\.cc\.separator`: expected one character"):
            read_split("cc", dict(ds, separator=bad), "train", 4, 0)


def test_prepare_of_a_webdataset_through_the_cli(tmp_path, shards):
    ds, disk, expect = shards
    cfg = {"name": "cc3m", "dataset": ds, "image_size": 8, "seed": 0}
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    train, test = tmp_path / "train.safetensors", tmp_path / "test.safetensors"
    subprocess.run([sys.executable, "-m", "clipbd", "prepare", "--cfg", json.dumps(cfg),
                    "--threads", "1", "--code", "abc", "--out-train", str(train),
                    "--out-test", str(test)], check=True, env=env, cwd=tmp_path, timeout=300)
    got = load_split(train)
    assert got.ids == [f"cc3m/{shard}/{key}" for shard, key, _ in expect]
    assert got.captions == [cap for _, _, cap in expect]
    want = np.stack([load_image(disk / f"{key}.jpg", 8) for _, key, _ in expect])
    assert np.array_equal(got.images[:].numpy(), want)
    assert len(load_split(test)) == 0


def test_a_webdataset_corpus_in_the_config(tmp_path, shards):
    """A poisoning corpus without `target`; refused as an evaluated dataset; absent shards
    are listed before any job with the key and the fix."""
    import yaml

    ds, _, _ = shards
    cfg = yaml.safe_load(DEFAULT.read_text())
    cfg["datasets"]["cc3m"] = dict(ds)
    cfg["backdoor"]["datasets"] = ["cc3m"]
    out = config.resolve(cfg)
    assert out["datasets"]["cc3m"]["kind"] == "webdataset"
    check_paths(out)
    bad = dict(cfg, grid=[dict(cfg["grid"][0], datasets=["cc3m"])])
    with pytest.raises(ConfigError, match=r"`grid\[0\]\.datasets\[0\]`: cc3m is a caption corpus"):
        config.resolve(bad)
    gone = dict(cfg, datasets=dict(cfg["datasets"], cc3m=dict(ds, path=str(tmp_path / "no"))))
    with pytest.raises(ConfigError, match=r"config key `datasets\.cc3m\.path`\): set it to the "
                       "folder of the webdataset .tar shards"):
        check_paths(config.resolve(gone))
